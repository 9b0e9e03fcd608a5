#ifndef CHEBACKUP_CSPAWN_H
#define CHEBACKUP_CSPAWN_H
/* The GNU extensions Subprocess needs, which Swift's Glibc module does not import. */
#include <spawn.h>

/* pipe2(fds, O_CLOEXEC): both ends close-on-exec from the moment they exist. */
int chb_pipe_cloexec(int fds[2]);
/* posix_spawn_file_actions_addclosefrom_np: the child closes every fd from `from` on. */
int chb_spawn_closefrom(posix_spawn_file_actions_t *actions, int from);
#endif
