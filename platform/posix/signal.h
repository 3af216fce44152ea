/* The process-wide signal registry (signal.c), shared by the I/O
 * implementations that run on POSIX systems. */
#ifndef BRAID_POSIX_SIGNAL_H
#define BRAID_POSIX_SIGNAL_H

/* Start (on=1) or stop (on=0) delivering signo to a reactor known by its
 * wakeup descriptor wake_fd: the handler writes an 8-byte 1 to it (an
 * eventfd, or the write end of a pipe). *slot (-1 at first) and *refs (0
 * at first) are the reactor's registration; they are updated here, under
 * the registry's lock. 0 or BRAID_E*. */
int braid__sig_watch_fd(int wake_fd, int *slot, unsigned *refs, int signo,
                        int on);
/* Delivery count of signo since the process started. */
unsigned braid__sig_count(int signo);

#endif
