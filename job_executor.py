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
    p.add_argument("--lease", type=float, default=60.0,
                   help="seconds a claim lasts without a heartbeat (at least 3; renewed every third of it)")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs (at least 1)")
    p.add_argument("--worker-id", default="", help="default: host-pid-random")
    p.add_argument("--keep-frames", action="store_true", help="keep progress frames after the GIF is written")
    p.add_argument("--cache-size", type=int, default=1, help="presets kept loaded at once (at least 1)")
    p.add_argument("--batch", default="auto",
                   help="compatible jobs optimised together: a number, or auto (GPU: from free memory; CPU: 4)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast on GPUs, fp32 on the CPU")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("t2i").setLevel(logging.INFO)

    from t2i.cli.common import resolve_device
    from t2i.errors import T2IError
    from t2i.service.executor import Executor, ExecutorConfig

    try:
        device = resolve_device(args.device)
        precision = args.precision if args.precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
        if args.batch != "auto" and not (args.batch.isdigit() and int(args.batch) >= 1):
            raise ValueError(f"--batch {args.batch}: use a whole number >= 1, or auto")
        cfg = ExecutorConfig(db=args.db, device=device, worker_id=args.worker_id, lease=args.lease, poll=args.poll,
                             once=args.once, max_jobs=args.max_jobs, keep_frames=args.keep_frames,
                             cache_size=args.cache_size, batch=args.batch, precision=precision)
        executor = Executor(cfg)  # opens the store; the service start creates an SQLite file not there yet
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
