/*
 * Baton's peer credentials of a Unix-domain socket, for the agent's SPIFFE Workload API server
 * (clients/rotation/src/workload-api/peer-credentials.ts loads it). Not optional: the Workload API
 * names its caller by what the kernel reports, never by anything the caller sends, and Node has no
 * API for it. Without this module the agent's Workload API socket refuses to start.
 *
 * Linux only. Elsewhere every function throws "not supported on this platform" (the module still
 * builds, so that one binding.gyp serves every platform).
 *
 *   peerCredentials(fd)       -> { pid, uid, gid, pidfd }   SO_PEERCRED and SO_PEERPIDFD
 *   executablePath(pid, pidfd) -> string | null             /proc/<pid>/exe, checked against the pidfd
 *   closeFd(fd)                                              close(2), EBADF ignored
 *   peerHungUp(fd)            -> boolean                    the peer has closed its end (poll POLLRDHUP)
 *
 * Only N-API is used, so one build serves every Node version.
 */
#define _GNU_SOURCE
#include <node_api.h>

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* man 7 unix: SO_PEERPIDFD (Linux 6.5); older libc headers do not define it. */
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
/* man 2 pidfd_send_signal (Linux 5.1); the number is the same on every architecture. */
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  return NULL;
}

/* An integer argument in [-1, INT32_MAX]; anything else (a fraction, NaN, a string) is refused. */
static int read_fd(napi_env env, napi_value value, int32_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok) return 0;
  if (!(d >= -1 && d <= INT32_MAX) || d != (double)(int32_t)d) return 0;
  *out = (int32_t)d;
  return 1;
}

/* An Error "<what>: <strerror(err)>" with the number as its `errno` property. */
static napi_value throw_errno(napi_env env, const char *what, int err) {
  char text[256];
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  napi_value message, error, number;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &error);
  napi_create_int32(env, err, &number);
  napi_set_named_property(env, error, "errno", number);
  napi_throw(env, error);
  return NULL;
}

static void set_int(napi_env env, napi_value object, const char *name, int64_t value) {
  napi_value v;
  napi_create_int64(env, value, &v);
  napi_set_named_property(env, object, name, v);
}

/*
 * peerCredentials(fd): the credentials the kernel recorded for the process that called connect(2)
 * on the other end of the connected Unix-domain socket fd.
 *
 * man 7 unix, SO_PEERCRED: "the credentials of the peer process connected to this socket ... in
 * effect at the time of the call to connect(2)". They name the connecting process, whatever it
 * sends later, and they cannot be forged from user space. The pid alone can be recycled once that
 * process exits, so SO_PEERPIDFD (man 7 unix, Linux 6.5) also returns a pidfd that refers to that
 * exact process for as long as it is open; executablePath() checks the pid against it.
 *
 * pidfd is -1 only when the kernel has no SO_PEERPIDFD (ENOPROTOOPT from a kernel older than 6.5,
 * EOPNOTSUPP). Any other failure throws: EINVAL or ESRCH from a kernel that has the option mean the
 * peer process has already gone (before pidfs, Linux 6.5-6.x could make no pidfd for an exited
 * process), and returning -1 there would downgrade the caller to the unchecked pid, exactly when
 * that pid may have been recycled.
 */
static napi_value PeerCredentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1)
    return throw_type(env, "peerCredentials(fd)");
  if (!read_fd(env, argv[0], &fd) || fd < 0) return throw_type(env, "fd must be a non-negative integer");

  /* SO_PEERCRED on a TCP socket "succeeds" with pid 0 and uid/gid -1: refuse anything but AF_UNIX. */
  int domain = -1;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
    return throw_errno(env, "getsockopt(SO_DOMAIN)", errno);
  if (domain != AF_UNIX) return throw_errno(env, "not a Unix-domain socket", EAFNOSUPPORT);

  struct ucred cred;
  len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  if (len != sizeof cred || cred.pid <= 0)
    return throw_errno(env, "getsockopt(SO_PEERCRED): no peer process", ENOTCONN);

  int pidfd = -1;
  len = sizeof pidfd;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) {
    int err = errno;
    if (err != ENOPROTOOPT && err != EOPNOTSUPP) return throw_errno(env, "getsockopt(SO_PEERPIDFD)", err);
    pidfd = -1;
  } else if (len != sizeof pidfd || pidfd < 0) {
    if (pidfd >= 0) close(pidfd);
    return throw_errno(env, "getsockopt(SO_PEERPIDFD): no pidfd", EPROTO);
  } else {
    /*
     * The kernel makes every pidfd close-on-exec (pidfd_prepare); make sure of it anyway, so that a
     * child the agent spawns can never inherit a handle on a caller's process.
     */
    int flags = fcntl(pidfd, F_GETFD);
    if (flags < 0 || (!(flags & FD_CLOEXEC) && fcntl(pidfd, F_SETFD, flags | FD_CLOEXEC) != 0)) {
      int err = errno;
      close(pidfd);
      return throw_errno(env, "fcntl(pidfd, FD_CLOEXEC)", err);
    }
  }

  napi_value result;
  napi_create_object(env, &result);
  set_int(env, result, "pid", cred.pid);
  set_int(env, result, "uid", cred.uid);
  set_int(env, result, "gid", cred.gid);
  set_int(env, result, "pidfd", pidfd);
  return result;
}

/*
 * executablePath(pid, pidfd): the target of /proc/<pid>/exe, or null when it cannot be read or when
 * the process the pidfd refers to no longer holds that pid.
 *
 * Order matters. The link is read first, then the pidfd's process is checked to be still there
 * (man 2 pidfd_send_signal with signal 0: only the existence and permission checks; ESRCH "the
 * target process does not exist (i.e., it has terminated and been waited on)"). A pid is not
 * reused until its process has been waited on, so a process still there after the read held the
 * pid during the read: the link read was its own. Checking first would leave a window in which it
 * exits, is reaped and its pid goes to another program before the read.
 *
 * EPERM from the check still means the process exists (the permission check comes after the
 * lookup). A zombie passes the check, but its exe link no longer reads, so the result is null.
 *
 * With pidfd < 0 (no SO_PEERPIDFD) the link is returned unchecked: it names whichever process holds
 * the pid now, which is the caller only if it has not exited.
 */
static napi_value ExecutablePath(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t pid, pidfd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2)
    return throw_type(env, "executablePath(pid, pidfd)");
  if (!read_fd(env, argv[0], &pid) || pid <= 0) return throw_type(env, "pid must be a positive integer");
  if (!read_fd(env, argv[1], &pidfd)) return throw_type(env, "pidfd must be an integer >= -1");

  napi_value null_value;
  napi_get_null(env, &null_value);

  char link[64];
  snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
  char target[PATH_MAX];
  /* readlink(2) does not terminate the string and truncates silently: a full buffer may be cut. */
  ssize_t n = readlink(link, target, sizeof target);
  if (n <= 0 || (size_t)n >= sizeof target) return null_value;
  target[n] = '\0';

  if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) != 0 && errno != EPERM)
    return null_value;

  napi_value result;
  if (napi_create_string_utf8(env, target, (size_t)n, &result) != napi_ok) return null_value;
  return result;
}

/* closeFd(fd): close(2). EBADF (already closed) is ignored; close is never retried (man 2 close). */
static napi_value CloseFd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1)
    return throw_type(env, "closeFd(fd)");
  if (!read_fd(env, argv[0], &fd) || fd < 0) return throw_type(env, "fd must be a non-negative integer");
  if (close(fd) != 0 && errno != EBADF && errno != EINTR) return throw_errno(env, "close", errno);
  return NULL;
}

/*
 * peerHungUp(fd): whether the other end has closed (man 2 poll: POLLRDHUP, POLLHUP), without
 * reading. Node's HTTP/2 session stops reading a connection after a protocol error (it sends its
 * GOAWAY and waits), so the peer's close would never be seen there and the connection would hold
 * its slot for ever: the server asks the kernel instead.
 */
static napi_value PeerHungUp(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1)
    return throw_type(env, "peerHungUp(fd)");
  if (!read_fd(env, argv[0], &fd) || fd < 0) return throw_type(env, "fd must be a non-negative integer");
  struct pollfd p = {.fd = fd, .events = POLLRDHUP, .revents = 0};
  int n = poll(&p, 1, 0);
  if (n < 0) return throw_errno(env, "poll", errno);
  napi_value result;
  napi_get_boolean(env, n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0, &result);
  return result;
}

#else

static napi_value NotSupported(napi_env env, napi_callback_info info) {
  (void)info;
  napi_throw_error(env, "ERR_NOT_SUPPORTED", "peer credentials are not supported on this platform");
  return NULL;
}
#define PeerCredentials NotSupported
#define ExecutablePath NotSupported
#define CloseFd NotSupported
#define PeerHungUp NotSupported

#endif

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, PeerCredentials, NULL, &fn);
  napi_set_named_property(env, exports, "peerCredentials", fn);
  napi_create_function(env, "executablePath", NAPI_AUTO_LENGTH, ExecutablePath, NULL, &fn);
  napi_set_named_property(env, exports, "executablePath", fn);
  napi_create_function(env, "closeFd", NAPI_AUTO_LENGTH, CloseFd, NULL, &fn);
  napi_set_named_property(env, exports, "closeFd", fn);
  napi_create_function(env, "peerHungUp", NAPI_AUTO_LENGTH, PeerHungUp, NULL, &fn);
  napi_set_named_property(env, exports, "peerHungUp", fn);
  return exports;
}
