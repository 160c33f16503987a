"""`python -m bot.eval squad PATH [--limit N] [--json]`: answer quality on SQuAD v1.1 dev."""
from __future__ import annotations

import argparse
import logging
import sys

SMALL_LIBRARIES = 48  # articles, each alone in a library beside the shipped corpus
OTHER_QUESTIONS = 100  # other articles' questions asked of each


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    squad = sub.add_parser("squad", help="ReQA-style sentence retrieval on SQuAD v1.1 (zipped or not)")
    squad.add_argument("path", help="e.g. ../shared/data/squad-dev-v1.1.json.zip")
    squad.add_argument("--limit", type=int, metavar="N", help="only N questions, spread over the file")
    squad.add_argument(
        "--ool-articles",
        type=int,
        metavar="N",
        help="out-of-library check on N articles (default: every article with a question asked)",
    )
    squad.add_argument("--small-libraries", type=int, default=SMALL_LIBRARIES, metavar="N",
                       help=f"small-library measure on N articles (default {SMALL_LIBRARIES})")
    squad.add_argument("--json", action="store_true", help="JSON output")
    squad.add_argument("-v", "--verbose", action="store_true", help="log progress")
    train = sub.add_parser("train", help="fit the confidence model (bot/core/confidence_model.json) on SQuAD")
    train.add_argument("path")
    train.add_argument("--limit", type=int, metavar="N", help="only N questions, spread over the file")
    train.add_argument("--small-libraries", type=int, default=SMALL_LIBRARIES, metavar="N")
    train.add_argument("--other-questions", type=int, default=OTHER_QUESTIONS, metavar="N",
                       help="other articles' questions asked of each small library")
    train.add_argument("--write", action="store_true", help="write the model into the package")
    train.add_argument("--rows", metavar="FILE.npz", help="save the collected features here, or reuse them if it exists")
    train.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    if args.limit is not None and args.limit <= 0:
        parser.error("--limit must be positive")

    try:
        if args.command == "train":
            from .train import run as train

            return train(args.path, args.limit, args.small_libraries, args.other_questions, args.write, args.rows)
        from .squad import run

        return run(args.path, args.limit, args.json, args.ool_articles, args.small_libraries)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
