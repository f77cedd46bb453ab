"""A training run killed from outside the loop: ``python tests/helpers/fault_driver.py STEP --set key=value ...``
trains the resolved config (as `vitkit train --set ...` would) and SIGKILLs itself (a real kill -9: nothing flushed,
closed or cleaned up, the return code is -9) right after optimizer step STEP, through the loop's step callback.

Under torchrun every rank dies, unless ``--rank R`` names the one that does; ``--first-attempt-only`` dies only in
the first attempt of a ``torchrun --max-restarts N`` run (TORCHELASTIC_RESTART_COUNT 0), so the restarted worker
group can finish.
"""

from __future__ import annotations

import argparse
import os
import signal

from vitkit.train import load_config, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("die_after_step", type=int)
    parser.add_argument("--rank", type=int, default=None, help="only this global rank dies (default: every rank)")
    parser.add_argument("--first-attempt-only", action="store_true",
                        help="die only in torchrun's first attempt, not in a restarted worker group")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    dies = (args.rank is None or args.rank == rank) and (attempt == 0 or not args.first_attempt_only)

    def die(state) -> None:
        if dies and state.step >= args.die_after_step:
            os.kill(os.getpid(), signal.SIGKILL)

    train(load_config(None, args.set), callbacks=[die])


if __name__ == "__main__":
    main()
