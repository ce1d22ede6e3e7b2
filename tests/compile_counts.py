"""A torchrun worker (tests/test_train_distributed.py): ``mote ARGS`` on every rank, then one
line per rank of what ``torch.compile`` made of it, from dynamo's own counters.

``COUNTS {"rank": r, "graphs": g, "backend_graphs": b, "breaks": k}``: the frames dynamo
captured, the graphs the backend compiled (AOT autograd's count: a graph splitter such as
DDP's would compile each piece), and the graph breaks. A command with ``--compile`` under
torchrun should give one graph for full batches and one recompile for the last, smaller batch.
"""

from __future__ import annotations

import json
import os
import sys

import torch.distributed as dist
from multinode_commands import run_command
from torch._dynamo.utils import counters

if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        code = run_command(sys.argv[1:])
        counts = {
            "rank": int(os.environ["RANK"]),
            "exit": code,
            "graphs": counters["stats"]["unique_graphs"],
            "backend_graphs": counters["aot_autograd"]["total"],
            "breaks": sum(counters["graph_break"].values()),
        }
        sys.stderr.write("COUNTS " + json.dumps(counts) + "\n")
        sys.stderr.flush()
    finally:
        dist.destroy_process_group()
