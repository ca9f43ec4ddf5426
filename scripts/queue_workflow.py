#!/usr/bin/env python3
"""Queue a workflow on a running ComfyUI and fetch its results, without the editor.

    python3 scripts/queue_workflow.py example_workflows/api/longlive_vace_r2v.json \\
        --server http://127.0.0.1:8188 --reference me.png --prompt "a cat surfing" --out results/

The workflow may be in API format (example_workflows/api/*.json) or UI format (a file the editor
saved, example_workflows/*.json): a UI file is converted with the server's /object_info first.
Before queueing, inputs can be changed from the command line:

  --prompt TEXT      text of the prompt nodes (CLIPTextEncode and other nodes with a literal
                     `text` input), in node-id order: repeat it for a workflow with several prompts
  --reference PATH   upload an image (POST /upload/image) into the next Load Image node, in node-id
                     order; repeat it for several references
  --video PATH       upload a video into the Load Video node
  --seed N           every `seed` input
  --frames N         the video's length in frames, 4k+1 (81, 161, ...), on the node that holds the
                     video's size (Video size = EmptyHunyuanLatentVideo, or VACE Encode References);
                     another number is refused with the two nearest valid lengths. Continue Video's
                     `length` (the frames it adds) is left alone: --set changes it
  --width/--height N the frame size, a multiple of 16, on that same node
  --set ID.INPUT=VALUE   any input of any node; VALUE is read as JSON when it parses, else as text

Live steering and its replay (a LongLive Sampler or Sampler -> Video with its clip connected):

  --steer            read lines from standard input while the prompt runs and steer it with each
                     (POST /longlive/steer): from the first finished chunk on, each line takes
                     over at the next chunk; several lines before one chunk boundary: the last wins
  --replay-steering [SOURCE]  make the steered video again: a 'LongLive Schedule from Steering'
                     node with the steering record of SOURCE (an mp4 with `longlive_steering`
                     metadata, or a JSON file of the record) feeds the sampler's prompt_schedule.
                     The workflow may itself be such an mp4 (its `prompt` metadata is the API
                     graph, seed included): `queue_workflow.py LongLive_00001_.mp4 --replay-steering`

Several GPUs or machines, through ComfyUI-Distributed on --server (the master; docs/several-gpus.md):

  --distributed      queue with POST /distributed/queue on the master and every worker its
                     Distributed panel has enabled (GET /distributed/config); every participant's
                     video comes back to the master, and all of them are downloaded
  --workers IDS      these worker ids instead (comma-separated; implies --distributed)

Progress comes from the server's websocket (/ws; falls back to polling /history when the websocket
cannot be opened). Output files (type "output") are streamed
from GET /view into --out, never over an existing file (a second `x.mp4` arrives as `x-2.mp4`),
and their paths printed on stdout, one per line. A file name from the server that is not a plain
name ('', '..', 'a/../b', ...) is refused.

Ctrl-C, or --timeout passing, withdraws the prompt this client queued (it chooses the prompt_id
itself): deleted from the queue while it waits, or interrupted by id while it runs (ComfyUI ignores
an interrupt for a prompt that is not running, so no one else's prompt is touched).

Every failure ends with one line on stderr (no traceback) and an exit status:
  0  done
  1  usage or local: bad arguments, an unreadable workflow or file, an output that cannot be written
  2  the server rejected the workflow (validation; its messages are printed)
  3  a node failed while running (the node and its error are printed)
  4  stopped: --timeout passed (the prompt is withdrawn) or the prompt was interrupted on the server
  5  server: unreachable, refused, no answer within --request-timeout, an HTTP error on any route,
     or an answer that is not the JSON expected
  130 Ctrl-C (the prompt is withdrawn)

Standard library only, so it runs with any python >= 3.10, ComfyUI's own included. The client is the
package queue_client/ beside this file (one module per concern); this file is the command and the
names a script that imports it has always used.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/: queue_client, editor_widgets

from editor_widgets import widget_slots  # noqa: E402
from queue_client import cli  # noqa: E402
from queue_client.errors import (EXIT_CTRL_C, EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_SERVER,  # noqa: E402
                                 EXIT_STOPPED, EXIT_USAGE, ClientError, HTTPStatusError, NoAnswer, ServerError,
                                 TimedOut, WorkflowFailed, WorkflowRejected, WorkflowStopped)
from queue_client.follow import Progress, RunResult, output_items, run, withdraw  # noqa: E402
from queue_client.mp4 import is_mp4, mp4_metadata  # noqa: E402
from queue_client.server import ComfyAPI, checked_output_item, describe_rejection  # noqa: E402
from queue_client.steering import Steerer, add_steering_replay, load_steering_record  # noqa: E402
from queue_client.websocket import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,  # noqa: E402
                                    WS_GUID, WebSocket, WebSocketClosed)
from queue_client.workflow import (SIZE_NODES, Overrides, apply_overrides, load_workflow, parse_set,  # noqa: E402
                                   prompt_nodes, size_nodes, ui_to_api)

__all__ = ["EXIT_CTRL_C", "EXIT_FAILED", "EXIT_OK", "EXIT_REJECTED", "EXIT_SERVER", "EXIT_STOPPED", "EXIT_USAGE",
           "ClientError", "HTTPStatusError", "NoAnswer", "ServerError", "TimedOut", "WorkflowFailed",
           "WorkflowRejected", "WorkflowStopped", "Progress", "RunResult", "output_items", "run", "withdraw",
           "is_mp4", "mp4_metadata", "ComfyAPI", "checked_output_item", "describe_rejection", "Steerer",
           "add_steering_replay", "load_steering_record", "OP_BINARY", "OP_CLOSE", "OP_CONTINUATION", "OP_PING",
           "OP_PONG", "OP_TEXT", "WS_GUID", "WebSocket", "WebSocketClosed", "SIZE_NODES", "Overrides",
           "apply_overrides", "load_workflow", "parse_set", "prompt_nodes", "size_nodes", "ui_to_api",
           "widget_slots", "main"]


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
