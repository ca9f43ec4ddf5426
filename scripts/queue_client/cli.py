"""The command line of scripts/queue_workflow.py: its options, and each failure as one line and an exit status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from .errors import (EXIT_CTRL_C, EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_SERVER, EXIT_STATUS_HELP, EXIT_STOPPED,
                     EXIT_USAGE, ClientError, ServerError, WorkflowFailed, WorkflowRejected, WorkflowStopped, one_line)
from .distributed import expected_videos, queue_on_participants
from .follow import Progress, output_items, run
from .mp4 import is_mp4
from .server import ComfyAPI
from .steering import STEERING_KEY, add_steering_replay, load_steering_record
from .workflow import Overrides, apply_overrides, is_ui_workflow, load_workflow, ui_to_api

REPLAY_FROM_WORKFLOW = "<the workflow's mp4>"
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")


def is_video_name(filename: str) -> bool:
    return filename.lower().endswith(VIDEO_SUFFIXES)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit with 2, which here means "rejected"
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=EXIT_STATUS_HELP)
    parser.add_argument("workflow", help="workflow JSON, API format or UI format, or an mp4 that records one")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="prompt text for the next prompt node (repeatable)")
    parser.add_argument("--reference", action="append", default=[], metavar="PATH",
                        help="image uploaded into the next Load Image node (repeatable)")
    parser.add_argument("--video", metavar="PATH", help="video uploaded into the Load Video node")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--frames", type=int, help="the video's length in frames, 4k+1 (e.g. 81, 161)")
    parser.add_argument("--width", type=int, help="frame width, a multiple of 16 (e.g. 832)")
    parser.add_argument("--height", type=int, help="frame height, a multiple of 16 (e.g. 480)")
    parser.add_argument("--set", action="append", default=[], metavar="ID.INPUT=VALUE",
                        help="set any input (VALUE as JSON, else text; repeatable)")
    parser.add_argument("--steer", action="store_true",
                        help="steer the running prompt with each line read from standard input")
    parser.add_argument("--replay-steering", nargs="?", const=REPLAY_FROM_WORKFLOW, metavar="SOURCE",
                        help="replay a run's steering: SOURCE is its mp4 or a JSON file of the record "
                             "(default: the workflow, when it is an mp4)")
    parser.add_argument("--distributed", action="store_true",
                        help="queue through ComfyUI-Distributed on --server (the master) and every worker its "
                             "Distributed panel has enabled; every participant's video is downloaded")
    parser.add_argument("--workers", metavar="IDS",
                        help="with --distributed: these worker ids instead (comma-separated, as GET "
                             "/distributed/config lists them; implies --distributed)")
    parser.add_argument("--out", default="comfy_outputs",
                        help="folder for the downloaded outputs (default %(default)s)")
    parser.add_argument("--no-download", action="store_true", help="leave the outputs on the server")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds to wait for the result; then the prompt is withdrawn (default %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=60,
                        help="seconds to wait for any one HTTP answer (default %(default)s)")
    parser.add_argument("--no-websocket", action="store_true", help="follow the prompt by polling /history")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the API workflow that would be queued and exit (no upload, no queue)")
    parser.add_argument("--debug", action="store_true", help="show a traceback for an unexpected error")
    return parser


def main(argv: list[str] | None, description: str) -> int:
    """Run the command; the exit status. `description` heads --help (scripts/queue_workflow.py's first line)."""
    args = build_parser(description).parse_args(argv)
    say = Progress({}).say
    try:
        return _main(args, say)
    except WorkflowRejected as error:
        say(str(error))
        return EXIT_REJECTED
    except WorkflowFailed as error:
        say(str(error))
        return EXIT_FAILED
    except WorkflowStopped as error:
        say(f"stopped: {error}")
        return EXIT_STOPPED
    except ServerError as error:
        say(f"error: {error}")
        return EXIT_SERVER
    except ClientError as error:
        say(f"error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        say(f"interrupted (Ctrl-C){': ' + str(stop) if str(stop) else ''}")
        return EXIT_CTRL_C
    except Exception as error:  # a bug of ours: still one line, unless asked for the details
        if args.debug:
            raise
        say(f"error: unexpected {type(error).__name__}: {one_line(error)} (--debug shows the traceback)")
        return EXIT_USAGE


def _main(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    comfy = ComfyAPI(args.server, timeout=args.request_timeout)
    workflow = load_workflow(args.workflow)
    if is_ui_workflow(workflow):
        say("UI-format workflow: converting with the server's /object_info")
        workflow = ui_to_api(workflow, comfy.object_info())
    if args.dry_run:
        images = [Path(p).name for p in args.reference]
        video = Path(args.video).name if args.video else None
    else:
        images = [comfy.upload(p) for p in args.reference]
        video = comfy.upload(args.video) if args.video else None
    overrides = Overrides(prompts=args.prompt, images=images, video=video, seed=args.seed, frames=args.frames,
                          width=args.width, height=args.height, sets=args.set)
    for change in apply_overrides(workflow, overrides):
        say(f"set {change}")
    if args.replay_steering is not None:
        source = args.workflow if args.replay_steering == REPLAY_FROM_WORKFLOW else args.replay_steering
        if args.replay_steering == REPLAY_FROM_WORKFLOW and not is_mp4(source):
            raise ClientError("--replay-steering without SOURCE replays the workflow's own record: give an mp4 as "
                              "the workflow, or the record's file or mp4 as SOURCE")
        for change in add_steering_replay(workflow, load_steering_record(source)):
            say(f"set {change}")
    if args.dry_run:
        print(json.dumps(workflow, indent=2, ensure_ascii=False))
        return EXIT_OK
    if args.steer and args.no_websocket:
        raise ClientError("--steer needs the websocket (it steers from the first chunk the server reports): "
                          "drop --no-websocket")
    distributed = None
    if args.distributed or args.workers is not None:
        if args.steer:
            raise ClientError("--steer steers the master's prompt only; a distributed run's workers each run their "
                              "own (steer them in their own editors): drop --steer or --distributed")
        wanted = [i.strip() for i in args.workers.split(",") if i.strip()] if args.workers is not None else None
        distributed = queue_on_participants(comfy, wanted, say)
    out_dir = None if args.no_download else Path(args.out)
    result = run(comfy, workflow, out_dir=out_dir, timeout=args.timeout, use_websocket=not args.no_websocket,
                 steer_lines=sys.stdin if args.steer else None, distributed=distributed)
    outputs = output_items(result.entry)
    say(f"finished prompt {result.prompt_id}: {len(outputs)} output file(s)")
    if distributed is not None:
        videos = sum(is_video_name(item["filename"]) for item in outputs)
        expected = expected_videos(workflow, result.participants)
        say(f"ComfyUI-Distributed: {videos} video(s) collected on the master from {result.participants} "
            f"participant(s), the master's first")
        if videos < expected:
            say(f"ComfyUI-Distributed: {expected - videos} video(s) fewer than expected: a worker sent no whole video "
                "before the master's timeout (the master's log names it)")
    for node_id, output in (result.entry.get("outputs") or {}).items():
        if output.get(STEERING_KEY):
            say(f"steering of node {node_id} (replay it with --replay-steering): "
                f"{json.dumps(output[STEERING_KEY], ensure_ascii=False)}")
    for path in result.files:
        print(path)
    return EXIT_OK
