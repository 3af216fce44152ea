"""Twisted's Deferred doing the work of bench_deferred.c, for comparison.

Run with /usr/bin/python3 (python3-twisted). Argument: rounds (1,000,000).
"""
import sys
import time

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred


def cb(r):
    return r + 1


def flat(n):
    t0 = time.perf_counter_ns()
    s = 0
    for i in range(n):
        d = Deferred()
        d.addCallback(cb)
        d.addCallback(cb)
        d.callback(i)
        s += d.result
        del d
    return (time.perf_counter_ns() - t0) / n


def nested(n):
    t0 = time.perf_counter_ns()
    for i in range(n):
        inner = Deferred()
        d = Deferred()
        d.addCallback(lambda _r, inner=inner: inner)
        d.addCallback(cb)
        d.callback(i)
        inner.callback(i)
    return (time.perf_counter_ns() - t0) / n


def threads_bench(n, in_flight):
    state = {"left": n, "done": 0}

    def work():
        return None

    def on_done(_):
        state["done"] += 1
        if state["left"] > 0:
            submit()
        elif state["done"] == n:
            reactor.stop()

    def submit():
        state["left"] -= 1
        threads.deferToThread(work).addCallback(on_done)

    reactor.getThreadPool().adjustPoolsize(4, 4)
    result = {}

    def start():
        result["t0"] = time.perf_counter()
        for _ in range(min(in_flight, n)):
            submit()

    reactor.callWhenRunning(start)
    reactor.run()
    return n / (time.perf_counter() - result["t0"])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    flat(n // 10)
    print("create+2 callbacks+fire+free:   %7.1f ns/deferred" % flat(n))
    print("same with a nested deferred:    %7.1f ns/round" % nested(n))
    # The reactor runs once per process: only the 256-in-flight case here,
    # plus a sequential estimate from a second process would need a restart.
    tn = min(n // 10, 50000)
    print("deferToThread, 256 in flight:   %9.0f round trips/s"
          % threads_bench(tn, 256))


if __name__ == "__main__":
    main()
