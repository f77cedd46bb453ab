"""A training run killed from outside the loop: ``python tests/helpers/fault_driver.py STEP --set key=value ...``
trains the resolved config (as `vitkit train --set ...` would) and dies hard (os._exit, nothing flushed or cleaned,
like kill -9) right after optimizer step STEP, through the loop's step callback. Under torchrun every rank dies."""

from __future__ import annotations

import argparse
import os

from vitkit.train import load_config, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("die_after_step", type=int)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    def die(state) -> None:
        if state.step >= args.die_after_step:
            os._exit(3)

    train(load_config(None, args.set), callbacks=[die])


if __name__ == "__main__":
    main()
