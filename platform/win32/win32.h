/* Declarations shared by the Windows platform files (iocp.c, sys.c). */
#ifndef BRAID_PLATFORM_WIN32_H
#define BRAID_PLATFORM_WIN32_H

/* Start Winsock 2.2 once per process (WSAStartup); 0 or BRAID_E*. Every
 * reactor calls it; the first call does the work. */
int braid__winsock_init(void);

#endif
