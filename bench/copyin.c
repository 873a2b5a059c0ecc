/*
 * A model of the restart's page path when pages are copied in (mm/src/file-pages.ts), in C, to
 * see what the kernel alone costs per GiB: the main thread maps each 2 MiB of FILE into one of 16
 * places (MAP_POPULATE, or not) and reads every byte (the checksum's part), two threads copy four
 * places at a time into a registered anonymous GiB with UFFDIO_COPY. Prints wall and CPU (ms).
 *   gcc -O2 -mavx2 -pthread -o /tmp/copyin bench/copyin.c
 *   dd if=/dev/urandom of=/dev/shm/copyin.bin bs=1M count=1024; /tmp/copyin MODE /dev/shm/copyin.bin
 * MODE 0: MAP_POPULATE; 1: faulted in by the read; 2: as 1, with MADV_SEQUENTIAL. bench/README.md.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <sys/resource.h>
#include <immintrin.h>
#define S (2ul<<20)
#define SLOTS 16
#define MERGE 4
static const size_t G=1ul<<30; static int u, fd, mode; static char*dst,*reg;
static volatile int busy[SLOTS]; static volatile long qhead=0, qtail=0; static long groups[1024];
static pthread_mutex_t m=PTHREAD_MUTEX_INITIALIZER; static pthread_cond_t c=PTHREAD_COND_INITIALIZER;
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static uint64_t rd(const char*p,size_t n){ __m256i a=_mm256_setzero_si256(); for(size_t i=0;i<n;i+=32) a=_mm256_xor_si256(a,_mm256_loadu_si256((const __m256i*)(p+i))); uint64_t o[4]; _mm256_storeu_si256((__m256i*)o,a); return o[0]^o[1]^o[2]^o[3]; }
static void*worker(void*x){ for(;;){ pthread_mutex_lock(&m); while(qhead==qtail) { if(qhead==-1) break; pthread_cond_wait(&c,&m);} long g=groups[qhead%1024]; qhead++; pthread_mutex_unlock(&m); if(g<0){ pthread_mutex_lock(&m); qhead--; pthread_cond_broadcast(&c); pthread_mutex_unlock(&m); return 0;}
  size_t off=g*S; int slot=(g)%SLOTS; struct uffdio_copy cp={.dst=(uintptr_t)dst+off,.src=(uintptr_t)reg+slot*S,.len=MERGE*S}; if(ioctl(u,UFFDIO_COPY,&cp)){perror("copy");exit(1);}
  pthread_mutex_lock(&m); for(int k=0;k<MERGE;k++) busy[slot+k]=0; pthread_cond_broadcast(&c); pthread_mutex_unlock(&m);} }
int main(int argc,char**argv){ if(argc<3){fprintf(stderr,"usage: copyin MODE FILE (a file of 1 GiB)\n");return 2;} mode=atoi(argv[1]);
  fd=open(argv[2],O_RDONLY); if(fd<0){perror(argv[2]);return 1;}
  u=syscall(SYS_userfaultfd,O_CLOEXEC|1); struct uffdio_api api={.api=UFFD_API}; ioctl(u,UFFDIO_API,&api);
  dst=mmap(0,G,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  struct uffdio_register rg={.range={(uintptr_t)dst,G},.mode=UFFDIO_REGISTER_MODE_MISSING}; ioctl(u,UFFDIO_REGISTER,&rg);
  reg=mmap(0,SLOTS*S,PROT_READ,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  pthread_t t[2]; pthread_create(&t[0],0,worker,0); pthread_create(&t[1],0,worker,0);
  volatile uint64_t s=0; double t0=now(); struct rusage r0; getrusage(RUSAGE_SELF,&r0);
  for(size_t i=0;i<G/S;i++){ int slot=i%SLOTS; pthread_mutex_lock(&m); while(busy[slot]) pthread_cond_wait(&c,&m); busy[slot]=1; pthread_mutex_unlock(&m);
    char*at=reg+slot*S; int fl=MAP_SHARED|MAP_FIXED|(mode==0?MAP_POPULATE:0); mmap(at,S,PROT_READ,fl,fd,i*S); if(mode==2) madvise(at,S,MADV_SEQUENTIAL);
    s^=rd(at,S);
    if(slot%MERGE==MERGE-1){ pthread_mutex_lock(&m); groups[qtail%1024]=i-(MERGE-1); qtail++; pthread_cond_broadcast(&c); pthread_mutex_unlock(&m);} }
  pthread_mutex_lock(&m); groups[qtail%1024]=-1; qtail++; pthread_cond_broadcast(&c); pthread_mutex_unlock(&m);
  pthread_join(t[0],0); pthread_join(t[1],0);
  struct rusage r1; getrusage(RUSAGE_SELF,&r1);
  double cpu=(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec)*1e3+(r1.ru_utime.tv_usec-r0.ru_utime.tv_usec)/1e3+(r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)*1e3+(r1.ru_stime.tv_usec-r0.ru_stime.tv_usec)/1e3;
  printf("mode %d wall %.0f cpu %.0f\n",mode,now()-t0,cpu); return 0; }
