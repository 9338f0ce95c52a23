/* The pod sandbox's process for the local node (containerd's sandbox_image): holds the pod's namespaces, reaps
 * orphans when the pod shares one PID namespace, and exits 0 on SIGTERM or SIGINT. Static, so its image needs no
 * other file. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig) { (void)sig; stopping = 1; }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction action = {0};
    sigset_t handled, during_wait;

    /* Block the signals while checking `stopping`; sigsuspend unblocks them atomically, so none is missed. */
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGCHLD);
    sigprocmask(SIG_BLOCK, &handled, &during_wait);
    sigdelset(&during_wait, SIGTERM);
    sigdelset(&during_wait, SIGINT);
    sigdelset(&during_wait, SIGCHLD);

    action.sa_handler = on_stop;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    action.sa_handler = on_child;
    action.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, NULL);

    while (!stopping)
        sigsuspend(&during_wait);
    return 0;
}
