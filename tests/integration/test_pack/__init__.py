"""Test-only ComfyUI node pack for the integration tests. Never install it for real use.

The real Wan text encoder (umT5-XXL, about 5.7B parameters) cannot be built at random inside a
test, and no weights can be downloaded here, so the integration tests feed the LongLive sampler
from this stand-in instead of CLIPLoader + CLIPTextEncode. (ComfyUI's own execution tests load
small test node packs into a real server the same way.)

`LongLiveTestConditioning` returns a CONDITIONING shaped like the umT5 one, `[[tensor [1, 512, dim],
{}]]`: rows for the prompt's tokens are pseudo-random, seeded from a hash of the text (so the same
text always gives the same tensor, in every process), and the rows after the token count are zero,
as ComfyUI's umT5 zeroes padded positions.

`LongLiveTestCLIP` returns a CLIP stand-in with the interface CLIPTextEncode uses (`tokenize`, then
`encode_from_tokens_scheduled`), encoding a text to the same tensor: so core CLIPTextEncode, the
LongLive Schedule from Steering node and live steering can all run on it.

`LongLiveTestLatentShape` reports the shape of a LATENT in its UI output, so a test can read what a
core node (EmptyHunyuanLatentVideo) hands our sampler on each ComfyUI version.

GET /longlive_test/loaded_models lists what ComfyUI's memory manager holds loaded
(`comfy.model_management.loaded_models()`): each model's class and load device.
"""
import hashlib

import comfy.model_management
import torch
from aiohttp import web
from server import PromptServer

TEXT_LEN = 512  # umT5 pads (and the Wan DiT expects) 512 text tokens


def _token_count(text: str) -> int:
    """A rough stand-in for the tokenizer: one token per word plus the end-of-text token."""
    return min(TEXT_LEN, len(text.split()) + 1)


def _seed(text: str) -> int:
    # hashlib, not hash(): Python salts str hashes per process
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def fake_umt5_embedding(text: str, dim: int) -> torch.Tensor:
    """[1, 512, dim] float32: seeded rows for the tokens, zeros after them."""
    gen = torch.Generator().manual_seed(_seed(text))
    out = torch.zeros((1, TEXT_LEN, dim))
    n = _token_count(text)
    out[:, :n] = torch.randn((1, n, dim), generator=gen)
    return out


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
        return {"umt5xxl": [[(text, 1.0)]]}

    def encode_from_tokens_scheduled(self, tokens, unprojected: bool = False, add_dict=None, show_pbar: bool = True):
        text = tokens["umt5xxl"][0][0][0]
        return [[fake_umt5_embedding(text, self.dim), {"pooled_output": None}]]


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
