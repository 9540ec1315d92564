/* The data movement of `bibw` without any protocol: two processes, each
 * pinned to its own core, each pulling a window of 64 messages of S bytes
 * out of the other's memory at once (process_vm_readv, one call per
 * message, into 64 distinct buffers as the benchmark's receives are),
 * between barriers. Prints the aggregate rate of both directions: what a
 * receiver-pulls design moves on this machine with no matching, no
 * rendezvous and no waiting for the peer's progress.
 *
 * Build: cc -O2 -o bibw_floor bibw_floor.c
 * Usage: bibw_floor [size (default 4194304)] [windows (default 20)]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>
#include <sys/uio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <stdatomic.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
int main(int argc,char**argv){
  size_t S=argc>1?atol(argv[1]):4<<20; int W=64, IT=argc>2?atoi(argv[2]):20;
  struct sh { _Atomic int ready[2]; _Atomic int go; pid_t pid[2]; char* src[2]; double t[2]; _Atomic int bar[2]; } *sh =
    mmap(0,4096,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
  memset(sh,0,4096);
  int me = fork()==0 ? 1 : 0;
  pin(me);
  char* src = malloc(S); memset(src, 1+me, S);
  char* dst = malloc(S*W); memset(dst, 0, S*W);
  sh->pid[me]=getpid(); sh->src[me]=src; atomic_store(&sh->ready[me],1);
  while(!atomic_load(&sh->ready[1-me]));
  int other=1-me;
  for(int it=0; it<IT+2; it++){
    // barrier
    atomic_fetch_add(&sh->bar[me],1); while(atomic_load(&sh->bar[other])<atomic_load(&sh->bar[me]));
    if(it==2) sh->t[me]=now();
    for(int k=0;k<W;k++){ struct iovec l={dst+(size_t)k*S,S}, r={sh->src[other],S}; if(process_vm_readv(sh->pid[other],&l,1,&r,1,0)!=(ssize_t)S){perror("pvr");return 1;} }
  }
  atomic_fetch_add(&sh->bar[me],1); while(atomic_load(&sh->bar[other])<atomic_load(&sh->bar[me]));
  double el=now()-sh->t[me];
  if(me==0){ printf("size %zu: aggregate %.0f MB/s\n", S, 2.0*S*W*IT/el/1e6); wait(NULL);} 
  return 0;
}
