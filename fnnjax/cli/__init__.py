"""The ``fnnjax`` command: a thin layer that parses arguments and calls library functions.

    fnnjax train                                   # dense baseline on the bundled digits set
    fnnjax train --model fnn-1024 --dataset fashion_mnist --epochs 100 --out runs/fnn1024
    fnnjax enas --quick --out runs/enas            # and envelopenet, nhn, capacity
    fnnjax profile --model resnet50 --template quadratic --width 0.5   # params, FLOPs, memory, latency
    fnnjax models | fnnjax datasets

One module per subcommand (:mod:`~fnnjax.cli.train`, :mod:`~fnnjax.cli.inspect`,
:mod:`~fnnjax.cli.enas`, :mod:`~fnnjax.cli.envelopenet`, :mod:`~fnnjax.cli.nhn`,
:mod:`~fnnjax.cli.capacity`) over the flags they share (:mod:`~fnnjax.cli.common`). A user's
mistake (unknown name, impossible value, missing dataset, unwritable folder, a misspelt option, a
folder holding another run) is printed as one ``fnnjax: error: ...`` line naming the flag, with
exit status 2; ``--debug`` (before or after the command name) shows the traceback instead.
Warnings are one ``fnnjax: warning:`` line. The parsers read their defaults from the library's
configs (``SearchConfig()``, ``NhnConfig.quick()``, ...), so the help is what the library does.
"""

from fnnjax.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
