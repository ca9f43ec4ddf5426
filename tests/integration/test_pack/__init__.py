"""Test-only ComfyUI node pack for the integration tests. Never install it for real use.

The real Wan text encoder (umT5-XXL, about 5.7B parameters) cannot be built at random inside a
test, and no weights can be downloaded here, so the integration tests feed the LongLive sampler
from this stand-in instead of CLIPLoader + CLIPTextEncode. (ComfyUI's own execution tests load
small test node packs into a real server the same way.)

`LongLiveTestConditioning` returns a CONDITIONING shaped like the umT5 one, `[[tensor [1, 512, dim],
{}]]`, read from the text as ComfyUI's tokenizers read a prompt (inside ComfyUI, with its own
comfy/sd1_clip.py functions): prompt weights `(words:1.3)` / `(words)`, escaped brackets, and
`embedding:NAME` files from the embeddings folder. One row per word, pseudo-random and seeded from a
hash of the words (so the same text always gives the same tensor, in every process), then an end
row; each row is scaled by its weight, as ComfyUI scales a token's distance from the empty prompt
(here the zero vector); an embedding's rows go in where it is named; the rows after the last are
zero, as ComfyUI's umT5 zeroes padded positions. So `(snow:nan)` makes NaN rows, an embedding file
holding NaN makes NaN rows, and a lone surrogate fails to encode, as with the real encoder.

`LongLiveTestCLIP` returns a CLIP stand-in with the interface CLIPTextEncode uses (`tokenize`, then
`encode_from_tokens_scheduled`), encoding a text to the same tensor: so core CLIPTextEncode, the
LongLive Schedule from Steering node and live steering can all run on it.

`LongLiveTestLatentShape` reports the shape of a LATENT in its UI output, so a test can read what a
core node (EmptyHunyuanLatentVideo) hands our sampler on each ComfyUI version.

GET /longlive_test/loaded_models lists what ComfyUI's memory manager holds loaded
(`comfy.model_management.loaded_models()`): each model's class and load device.
"""
import hashlib
import logging
import re

import comfy.model_management
import torch
from comfy.sd1_clip import escape_important, load_embed, token_weights, unescape_important

import folder_paths
from aiohttp import web
from server import PromptServer

TEXT_LEN = 512  # umT5 pads (and the Wan DiT expects) 512 text tokens
EMBEDDING = "embedding:"


def _seed(text: str) -> int:
    # hashlib, not hash(): Python salts str hashes per process; a lone surrogate raises here
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def tokenize(text: str, dim: int) -> list[tuple[object, float]]:
    """(word or embedding row [dim], weight) in order, as ComfyUI's tokenizers weight the text and
    find its embeddings (a missing embedding is skipped with a warning, as there)."""
    tokens = []
    for part, weight in token_weights(escape_important(text), 1.0):
        for piece in re.split(rf"(?<=\s)(?={EMBEDDING})", unescape_important(part)):
            if piece.startswith(EMBEDDING):
                name, _, piece = piece[len(EMBEDDING):].strip("\n").partition(" ")
                rows = load_embed(name, folder_paths.get_folder_paths("embeddings"), dim)
                if rows is None:
                    logging.warning("test CLIP: embedding:%s does not exist, ignoring", name)
                else:
                    tokens += [(row, weight) for row in rows.reshape(-1, dim)]
            tokens += [(word, weight) for word in piece.split()]
    return tokens


def encode(tokens: list[tuple[object, float]], dim: int) -> torch.Tensor:
    """[1, 512, dim] float32: a row per token (and an end row), scaled by its weight, zeros after."""
    words = " ".join(t for t, _ in tokens if isinstance(t, str))
    gen = torch.Generator().manual_seed(_seed(words))
    out = torch.zeros((1, TEXT_LEN, dim))
    rows = min(TEXT_LEN, len(tokens) + 1)
    out[:, :rows] = torch.randn((1, rows, dim), generator=gen)
    for n, (token, weight) in enumerate(tokens[:rows - 1]):
        if not isinstance(token, str):
            out[0, n] = token.float()
        out[0, n] *= weight
    return out


def fake_umt5_embedding(text: str, dim: int) -> torch.Tensor:
    """What the real encoder's CONDITIONING tensor would be for `text`, in this stand-in."""
    return encode(tokenize(text, dim), dim)


class LongLiveTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "default": "a cat"}),
                "dim": ("INT", {"default": 4096, "min": 1, "max": 8192}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "LongLive/testing"
    DESCRIPTION = "TEST ONLY: deterministic fake umT5 conditioning for integration tests."

    def encode(self, text: str, dim: int):
        return ([[fake_umt5_embedding(text, dim), {}]],)


class FakeUMT5Clip:
    """What CLIPTextEncode calls on a CLIP: tokens as ComfyUI's tokenizers lay them out, a conditioning
    [[tensor [1, 512, dim], {"pooled_output": None}]]."""

    def __init__(self, dim: int):
        self.dim = dim

    def tokenize(self, text: str):
        return {"umt5xxl": [tokenize(text, self.dim)]}

    def encode_from_tokens_scheduled(self, tokens, unprojected: bool = False, add_dict=None, show_pbar: bool = True):
        return [[encode(tokens["umt5xxl"][0], self.dim), {"pooled_output": None}]]


class LongLiveTestCLIP:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"dim": ("INT", {"default": 4096, "min": 1, "max": 8192})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "LongLive/testing"
    DESCRIPTION = "TEST ONLY: a CLIP whose encoding is LongLiveTestConditioning's."

    def load(self, dim: int):
        return (FakeUMT5Clip(dim),)


class LongLiveTestLatentShape:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",)}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "report"
    CATEGORY = "LongLive/testing"
    DESCRIPTION = "TEST ONLY: the shape of a LATENT, in the UI output."

    def report(self, latent):
        return {"ui": {"shape": [list(latent["samples"].shape)]}}


NODE_CLASS_MAPPINGS = {"LongLiveTestConditioning": LongLiveTestConditioning, "LongLiveTestCLIP": LongLiveTestCLIP,
                       "LongLiveTestLatentShape": LongLiveTestLatentShape}
NODE_DISPLAY_NAME_MAPPINGS = {"LongLiveTestConditioning": "LongLive Test Conditioning (test only)",
                              "LongLiveTestCLIP": "LongLive Test CLIP (test only)",
                              "LongLiveTestLatentShape": "LongLive Test Latent Shape (test only)"}


@PromptServer.instance.routes.get("/longlive_test/loaded_models")
async def loaded_models(request):
    return web.json_response([{"class": type(patcher.model).__name__, "device": str(patcher.load_device)}
                              for patcher in comfy.model_management.loaded_models()])
