"""The headless client behind scripts/queue_workflow.py, one module per concern:

- errors:    the exit statuses and what can go wrong, as one-line messages
- workflow:  a UI-format workflow converted to the API graph, the command line's changes to a graph
- server:    the HTTP routes of ComfyUI the client uses, and streamed downloads
- websocket: a minimal RFC 6455 client for /ws progress messages
- follow:    running a prompt: queue, follow, withdraw on --timeout or Ctrl-C, download
- steering:  --steer and --replay-steering
- distributed: --distributed, queueing through ComfyUI-Distributed on the master
- mp4:       the text metadata of an mp4 (the recorded workflow and steering)
- cli:       the options and the exit status of each failure

Standard library only: docs/scripts.md says why no websocket or media library.
"""
