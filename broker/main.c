/*
 * main.c - command line, signals, and the event loop.
 */
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/config.h"
#include "broker/log.h"
#include "broker/access.h"
#include "broker/bridge.h"
#include "broker/persist.h"
#include "broker/version.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: gatemq [-c FILE] [--check-config]\n"
            "  -c, --config FILE   configuration file (default: the embedded development\n"
            "                      configuration: plain MQTT on 127.0.0.1:1883)\n"
            "      --check-config  validate the configuration and exit (0: valid)\n"
            "  -v, --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n");
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    LOG_NOTICE("SIGHUP received");
    broker_reload(w->data);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    LOG_NOTICE("signal %d received, shutting down", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int check_only = 0, opt;
    while ((opt = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'C':
            check_only = 1;
            break;
        case 'v':
            printf("gatemq %s\n", GATEMQ_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gatemq: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    gmq_config cfg;
    char err[512];
    int rc = path ? gmq_config_load(path, &cfg, err, sizeof(err))
                  : gmq_config_parse(gmq_config_default_text, "(embedded conf/dev.conf)", "conf",
                                     &cfg, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "gatemq: configuration error: %s\n", err);
        return 1;
    }
    if (!check_only)
        gmq_log_set_level(cfg.log_level);
    signal(SIGPIPE, SIG_IGN);

    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "gatemq: cannot create the event loop\n");
        gmq_config_free(&cfg);
        return 1;
    }
    int status = 1;
    broker *b = broker_new(loop, &cfg);
    if (!b) {
        LOG_ERROR("out of memory at start");
        goto out;
    }
    /* Files named by the configuration (certificates, keys, CRLs, the
     * password file) are loaded here, so --check-config checks them too. */
    if (broker_prepare(b))
        goto out;
    if (check_only) {
        printf("%s: configuration OK\n", path ? path : "(embedded default)");
        status = 0;
        goto out;
    }
    /* Restore retained messages and persistent sessions before accepting. */
    if (persist_open(b) || bridge_init(b) || persist_start(b))
        goto out;
    /* Restored subscriptions answer to the rules in force now. */
    access_recheck_all(b);
    bridge_start(b);
    if (broker_listen(b))
        goto out;
    ev_signal sigint, sigterm, sighup;
    ev_signal_init(&sigint, on_stop_signal, SIGINT);
    ev_signal_init(&sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&sighup, on_hup, SIGHUP);
    sighup.data = b;
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sighup);
    sys_start(b);
    session_expiry_start(b);
    LOG_NOTICE("gatemq %s started", GATEMQ_VERSION);

    ev_run(loop, 0);

    ev_signal_stop(loop, &sigint);
    ev_signal_stop(loop, &sigterm);
    ev_signal_stop(loop, &sighup);
    broker_shutdown(b);
    LOG_NOTICE("gatemq stopped");
    status = 0;
out:
    broker_free(b);
    ev_loop_destroy(loop);
    gmq_config_free(&cfg);
    return status;
}
