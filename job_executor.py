"""Start one executor: `python job_executor.py [--db URL] [--device cuda:0|cpu] [--once] ...`.

Run one per GPU; start more (on this host or, with PostgreSQL, on others) to scale out.
"""

import argparse
import logging
import signal
import sys

from t2i.store import default_url


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="claim queued t2i jobs and run them")
    p.add_argument("--db", default=default_url(), help="store URL (default: $T2I_DB, else sqlite:///t2i.db)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--poll", type=float, default=0.5, help="first idle wait in seconds (doubles up to 5 s)")
    p.add_argument("--lease", type=float, default=60.0, help="seconds a claim lasts without a heartbeat")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.add_argument("--worker-id", default="", help="default: host-pid-random")
    p.add_argument("--keep-frames", action="store_true", help="keep progress frames after the GIF is written")
    p.add_argument("--cache-size", type=int, default=1, help="presets kept loaded at once")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("t2i").setLevel(logging.INFO)

    from t2i.cli import resolve_device
    from t2i.errors import T2IError
    from t2i.executor import Executor, ExecutorConfig

    try:
        cfg = ExecutorConfig(db=args.db, device=resolve_device(args.device), worker_id=args.worker_id,
                             lease=args.lease, poll=args.poll, once=args.once, max_jobs=args.max_jobs,
                             keep_frames=args.keep_frames, cache_size=args.cache_size)
        executor = Executor(cfg)
    except (T2IError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, executor.request_stop)
    signal.signal(signal.SIGINT, executor.request_stop)
    try:
        return executor.run()
    finally:
        executor.close()


if __name__ == "__main__":
    sys.exit(main())
