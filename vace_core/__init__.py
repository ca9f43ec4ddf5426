"""Pure-PyTorch core of the LongLive + VACE node pack: model, loading, encoding, sampling.

Never imports ComfyUI; the nodes in `nodes/` adapt it to the host.
"""
