"""Seeded random gRPC requests as raw bytes: hostile field values (odd strings, extreme numbers, NaN,
huge repeated fields), invalid UTF-8 spliced into string fields, and truncated or random messages.

Raw bytes, because the generated stubs refuse to serialise invalid UTF-8, and a server must survive
what any client can put on the wire.
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass

from service.api.generated.inference import grpc_predict_v2_pb2 as oip
from service.api.generated.seqserve.v1 import inference_pb2 as pb

NATIVE = "/seqserve.v1.Inference/"
OIP = "/inference.GRPCInferenceService/"
METHODS = (
    NATIVE + "Generate",
    NATIVE + "GenerateStream",
    NATIVE + "Classify",
    NATIVE + "ListModels",
    OIP + "ModelInfer",
    OIP + "ModelInfer",  # twice: it does the work; the others only read the registry
    OIP + "ModelReady",
    OIP + "ModelMetadata",
    OIP + "ServerLive",
    OIP + "ServerReady",
    OIP + "ServerMetadata",
)
DATATYPES = ("BYTES", "BYTES", "FP32", "INT64", "BOOL", "FP16", "", "bytes", "NOPE")
MARK = "\x01\x02\x03\x04"  # valid UTF-8 placeholder, swapped for invalid bytes of the same length
INVALID_UTF8 = b"\xff\xfe\xc0\x80"
U32 = (0, 1, 2, 7, 31, 32, 33, 64, 65, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1)
U64 = (0, 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1)
DOUBLES = (0.0, -0.0, 1.0, 0.5, -1.0, 2.0, 3.0, 1e-300, 5e-324, 1e308, -1e308, math.inf, -math.inf, math.nan)


@dataclass(frozen=True)
class Case:
    method: str  # the full path, /package.Service/Method
    payload: bytes
    note: str

    @property
    def streams(self) -> bool:
        return self.method.endswith("/GenerateStream")


class CaseMaker:
    """`make(i)` is the i-th case of a seed: reproducible, so a failure names its case."""

    def __init__(self, seed: int, models: list[str]) -> None:
        self.rng = random.Random(seed)
        self.models = models
        self.bad_models = ["", "no-such-model", "../etc/passwd", "x" * 10_000]

    def model(self) -> str:
        """Mostly a served model, so that many cases get past the lookup into validation and the engine."""
        return self.rng.choice(self.models if self.rng.random() < 0.7 else self.bad_models)

    def text(self) -> str:
        r = self.rng
        pool = [
            "",
            "To be, or not",
            "\x00",
            "é漢字🙂",
            "\u202e\ufeff",
            "".join(chr(r.randrange(0x20, 0x2FFF)) for _ in range(r.randrange(1, 64))),
            "a" * r.choice((1, 1000, 100_000)),
            MARK,
        ]
        return r.choice(pool)

    def request_id(self) -> str:
        """Mostly empty or plain (so the case reaches the engine), sometimes hostile."""
        return self.rng.choice(("", "", "job-1", self.text()))

    def params(self) -> pb.SamplingParams:
        r = self.rng
        if r.random() < 0.3:  # plausible values: requests that run, with odd prompts and seeds
            return pb.SamplingParams(
                max_tokens=r.randrange(0, 33), temperature=r.choice((0.0, 0.7, 1.5)), seed=r.choice(U64)
            )
        p = pb.SamplingParams()
        for name in ("max_tokens", "top_k", "n", "logprobs", "min_tokens"):
            if r.random() < 0.5:
                setattr(p, name, r.choice(U32))
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty"):
            if r.random() < 0.5:
                setattr(p, name, r.choice(DOUBLES))
        if r.random() < 0.3:
            p.frequency_penalty = r.choice(DOUBLES)
        if r.random() < 0.3:
            p.seed = r.choice(U64)
        if r.random() < 0.3:
            count = r.choice((1, 3, 17, 5000))  # a huge repeated field holds short items: cases stay small
            p.stop.extend(self.text() if count < 100 else "x" for _ in range(count))
        if r.random() < 0.3:
            p.stop_token_ids.extend(r.choice(U32) for _ in range(r.choice((1, 4, 10_000))))
        p.ignore_eos, p.prompt_logprobs = r.random() < 0.5, r.random() < 0.2
        return p

    def shape(self) -> list[int]:
        r = self.rng
        return [r.choice((0, 1, 2, 3, -1, 2**31, 2**62, -(2**63))) for _ in range(r.choice((0, 1, 1, 2, 9)))]

    def raw_texts(self, count: int) -> bytes:
        """Length-prefixed BYTES data, sometimes with a lying length or a ragged end."""
        r = self.rng
        parts = [struct.pack("<I", len(t)) + t for t in (self.text().encode() for _ in range(count))]
        data = b"".join(parts)
        roll = r.random()
        if roll < 0.1:
            data += struct.pack("<I", r.choice(U32))
        elif roll < 0.2:
            data = data[: r.randrange(len(data) + 1)]
        return data

    def oip_message(self, method: str) -> bytes:
        r = self.rng
        if method in ("ModelReady", "ModelMetadata"):
            msg = oip.ModelReadyRequest if method == "ModelReady" else oip.ModelMetadataRequest
            return msg(
                name=self.model(), version=r.choice(("", "", "1", "2", self.text()))
            ).SerializeToString()
        if method != "ModelInfer":
            return b""  # the empty request messages
        if r.random() < 0.35:  # plausible: a request that runs, with odd texts
            count = r.choice((1, 2, 5))
            plausible = oip.ModelInferRequest(model_name=self.model(), id=self.request_id())
            plausible.inputs.add(name="text", datatype="BYTES", shape=[count])
            plausible.raw_input_contents.append(
                b"".join(struct.pack("<I", len(t)) + t for t in (self.text().encode() for _ in range(count)))
            )
            return plausible.SerializeToString()
        count = r.choice((0, 1, 2, 30, 20_000))
        infer = oip.ModelInferRequest(
            model_name=self.model(), model_version=r.choice(("", "", "1", "x")), id=self.request_id()
        )
        for _ in range(r.choice((1, 1, 1, 0, 2))):
            tensor = infer.inputs.add(
                name=r.choice(("text", "text", "text", "", "label", self.text())),
                datatype=r.choice(DATATYPES),
                shape=[count] if r.random() < 0.7 else self.shape(),
            )
            if r.random() < 0.6:
                infer.raw_input_contents.append(self.raw_texts(count if count < 100 else 3))
            elif r.random() < 0.5:
                tensor.contents.bytes_contents.extend(self.text().encode() for _ in range(min(count, 50)))
            else:
                tensor.contents.fp32_contents.extend(r.choice(DOUBLES) for _ in range(min(count, 50)))
            if r.random() < 0.2:
                tensor.parameters["binary_data_size"].int64_param = r.choice(U64[:4])
        if r.random() < 0.2:
            infer.raw_input_contents.append(r.randbytes(r.randrange(64)))  # one more than the inputs
        if r.random() < 0.3:
            infer.outputs.add(name=r.choice(("label", "probabilities", "", "nope", self.text())))
        if r.random() < 0.2:
            infer.parameters["binary_data_output"].bool_param = True
        return infer.SerializeToString()

    def message(self, path: str) -> bytes:
        r = self.rng
        service, method = path.rsplit("/", 1)
        if service + "/" == OIP:
            return self.oip_message(method)
        if method == "ListModels":
            return pb.ListModelsRequest().SerializeToString()
        if method == "Classify":
            count = r.choice((0, 1, 2, 30, 300_000))  # the huge one is short texts, ~600 kB in all
            texts = [self.text() if count < 100 else "ab" for _ in range(count)]
            msg = pb.ClassifyRequest(model=self.model(), texts=texts, request_id=self.request_id())
            return msg.SerializeToString()
        msg = pb.GenerateRequest(model=self.model(), params=self.params(), request_id=self.request_id())
        if r.random() < 0.7:
            msg.prompt = self.text()
        if r.random() < 0.4:
            msg.prompt_token_ids.extend(r.choice(U32) for _ in range(r.choice((1, 5, 200, 100_000))))
        return msg.SerializeToString()

    def make(self, i: int) -> Case:
        r = self.rng
        method = METHODS[i % len(METHODS)]
        payload = self.message(method)
        note = "fields"
        if MARK.encode() in payload:
            payload, note = payload.replace(MARK.encode(), INVALID_UTF8), "invalid utf-8"
        roll = r.random()
        if roll < 0.05:
            payload, note = payload[: r.randrange(len(payload) + 1)], "truncated"
        elif roll < 0.1:
            payload, note = r.randbytes(r.randrange(1, 256)), "random bytes"
        return Case(method, payload, note)
