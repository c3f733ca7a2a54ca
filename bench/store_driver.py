"""The PostgreSQL driver choice (store/postgresql.py): sync psycopg in Twisted threads vs psycopg's AsyncConnection.

Both on Twisted's asyncio reactor, as the daemon runs: wall time per upsert
and the reactor thread's CPU time per upsert (what the lookups share).
Usage: ``python bench/store_driver.py DSN [WRITES]`` (creates a table ``bench``).
"""
import asyncio
import sys
import threading
import time

from twisted.internet import asyncioreactor

asyncioreactor.install()   # before anything imports the default reactor
import psycopg
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

DSN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
SQL = "INSERT INTO bench (domain, v) VALUES (%s, %s) ON CONFLICT (domain) DO UPDATE SET v = excluded.v"


async def threaded(conc):
    """Sync psycopg, one connection per pool thread, ``conc`` writes in flight."""
    pool = ThreadPool(1, conc, name="b")
    pool.start()
    local = threading.local()
    def work(i):
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = psycopg.connect(DSN, autocommit=True)
        with c.transaction():
            c.execute(SQL, (f"d{i % 500}.example", i))
    t0, c0 = time.perf_counter(), time.thread_time()
    for start in range(0, N, conc):
        for d in [deferToThreadPool(reactor, pool, work, i) for i in range(start, start + conc)]:
            await d
    t1, c1 = time.perf_counter(), time.thread_time()
    pool.stop()
    return (t1 - t0) / N * 1e3, (c1 - c0) / N * 1e3

async def async_driver(conc):
    """psycopg's AsyncConnection on the reactor's asyncio loop, ``conc`` connections."""
    conns = [await psycopg.AsyncConnection.connect(DSN, autocommit=True) for _ in range(conc)]
    async def one(c, i):
        async with c.transaction():
            await c.execute(SQL, (f"d{i % 500}.example", i))
    t0, c0 = time.perf_counter(), time.thread_time()
    for start in range(0, N, conc):
        await asyncio.gather(*(one(conns[k], start + k) for k in range(conc)))
    t1, c1 = time.perf_counter(), time.thread_time()
    for c in conns:
        await c.close()
    return (t1 - t0) / N * 1e3, (c1 - c0) / N * 1e3

async def main(_reactor):
    with psycopg.connect(DSN, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS bench (domain TEXT PRIMARY KEY, v INT)")
    for conc in (1, 4):
        for name, fn in (("thread pool + sync psycopg", threaded), ("psycopg AsyncConnection", async_driver)):
            if fn is threaded:
                wall, cpu = await Deferred.fromCoroutine(fn(conc))
            else:
                wall, cpu = await Deferred.fromFuture(asyncio.ensure_future(fn(conc)))
            print(f"concurrency {conc}: {name}: {wall:.3f} ms wall per write, {cpu:.3f} ms reactor-thread CPU per write")

task.react(lambda r: Deferred.fromCoroutine(main(r)))
