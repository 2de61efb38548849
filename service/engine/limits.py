"""The ranges of every request parameter, in one place: the engine's SamplingParams and the API's
schemas (service/api/schemas.py) both check against these, so a limit cannot differ between them."""

from __future__ import annotations

MAX_N = 64  # samples per prompt (the engine's slots may allow fewer)
MAX_STOP_STRINGS = 16
MAX_STOP_TOKEN_IDS = 256
MAX_LOGPROBS = 20  # top alternatives per token
MIN_PENALTY, MAX_PENALTY = -2.0, 2.0  # OpenAI's presence and frequency penalties
SEED_BOUND = 2**64  # seeds are in [0, SEED_BOUND)
MAX_LOGIT_BIAS = 100.0  # OpenAI's logit_bias: each bias in [-MAX_LOGIT_BIAS, MAX_LOGIT_BIAS]
MAX_LOGIT_BIAS_ENTRIES = 1024
