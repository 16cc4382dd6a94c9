"""Command line: a thin shell over the library.

    rewardlab train --config cfg.yaml [--data FILE] [--out DIR] [--set train.epochs=2 ...] [--resume]
    rewardlab eval  --model DIR --data FILE [--out DIR] [--group-by FIELD ...]
    rewardlab score --model DIR --data FILE --out FILE [--normalize zscore]
    rewardlab calibrate --model DIR --data FILE
    rewardlab adapt --model DIR --data FILE --labeler ID
    rewardlab compare EVAL_DIR EVAL_DIR ...
    rewardlab demo  [--task text|image] [--out runs/demo]
    rewardlab tune  --config cfg.yaml --space space.yaml --trials N [--storage URL] [--study NAME] [--refit]
    rewardlab generate --policy MODEL --prompts prompts.txt --n 4 [--temperature 0.7,1.0] --out candidates.jsonl
    rewardlab label --data candidates.jsonl [--out labels.sqlite] [--port 8765] [--labeler NAME] [--model RM]
    rewardlab label --out labels.sqlite --export rankings.jsonl
    rewardlab best-of-n --policy MODEL --model RM --prompts prompts.txt --n 8 [--out best.jsonl]
    rewardlab serve --model DIR [--model NAME=DIR ...] [--host 127.0.0.1] [--port 8000]

User mistakes (bad config, bad data) print one line naming what and where, and
exit with status 2; no traceback.

Modules: ``parser`` and ``config_parsers`` build the argparse tree (``flags`` generates a config
dataclass's flags from its fields); ``train_commands``, ``data_commands`` and ``commands`` hold one
``cmd_*`` per command; ``entry`` has ``main``. Building the parser imports no torch: commands import
the library when they run.
"""

from rewardlab.cli.entry import main
from rewardlab.cli.parser import build_parser

__all__ = ["build_parser", "main"]
