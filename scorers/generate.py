"""Text generation backends behind one interface, for the rephrase stage.

`backend.generate(prompts, params)` returns one `Generation` per prompt, in order, and does not
raise for a single prompt's failure: a timeout, an HTTP error that outlived its retries, or an
exception in the model becomes `Generation(text=None, error=<reason>, detail=...)`, so the stage
rejects that chunk and carries on. A prompt is a string (completion) or a list of chat messages.

- `transformers`: a local Hugging Face causal LM, batched `generate` (left padding, length-sorted
  batches) on CPU or GPU.
- `openai`: any OpenAI-compatible server (`/v1/completions`, `/v1/chat/completions`), async with a
  concurrency limit, per-request timeout, retries with exponential backoff on 429/5xx, timeouts
  and connection errors; the API key comes from an environment variable and is never logged.
- `vllm`: vLLM's offline `LLM.generate`/`LLM.chat` (an optional extra for GPU machines).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from pathlib import Path

Prompt = str | list[dict]
RETRYABLE = {429, 500, 502, 503, 504}


# WRAP's prompts (Maini et al., 2024): the rephrase stage's defaults, here for the GPU benchmark too
WRAP_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
               "The assistant gives helpful, detailed, and polite answers to the questions.")
WRAP_TEMPLATE = "{system} USER: {instruction} {text} ASSISTANT:"
WRAP_INSTRUCTIONS = {
    "easy": "For the following paragraph give me a paraphrase of the same using a very small vocabulary and "
            "extremely simple sentences that a toddler will understand:",
    "wiki": "For the following paragraph give me a diverse paraphrase of the same in high quality English language "
            "as in sentences on Wikipedia:",
    "hard": "For the following paragraph give me a paraphrase of the same using very terse and abstruse language "
            "that only an erudite scholar will understand. Replace simple words and phrases with rare and complex "
            "ones:",
    "qa": "Convert the following paragraph into a conversational format with multiple tags of \"Question:\" "
          "followed by \"Answer:\":",
}


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0


@dataclass
class Generation:
    text: str | None
    error: str | None = None  # "timeout", "http_error", "generation_error"
    detail: str | None = None
    tokens: int = 0  # generated tokens, when the backend reports them


def _local_model_dir(path: str) -> Path:
    model_dir = Path(path)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face model directory (no config.json): {model_dir}")
    return model_dir


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: str, device: str = "auto", batch_size: int = 16, chat_template: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from winnow.gpu.engine import pick_device

        self.model_name = model
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(_local_model_dir(model), padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        self.batch_size = batch_size
        self.chat_template = chat_template

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True,
                                                  chat_template=self.chat_template)

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[Generation]:
        import torch

        texts = [self.render(p) for p in prompts]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])  # similar lengths share a batch: less padding
        out: list[Generation | None] = [None] * len(texts)
        for number, start in enumerate(range(0, len(order), self.batch_size)):
            batch = order[start:start + self.batch_size]
            try:
                enc = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(self.device)
                torch.manual_seed(params.seed + number)
                sample = params.temperature > 0
                with torch.inference_mode():
                    ids = self.model.generate(
                        **enc, max_new_tokens=params.max_new_tokens, do_sample=sample,
                        temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
                        pad_token_id=self.tokenizer.pad_token_id)
                new = ids[:, enc["input_ids"].shape[1]:]
                for row, i in enumerate(batch):
                    tokens = new[row][new[row] != self.tokenizer.pad_token_id]
                    out[i] = Generation(self.tokenizer.decode(tokens, skip_special_tokens=True), tokens=len(tokens))
            except Exception as err:  # noqa: BLE001 - one bad batch must not end the shard
                for i in batch:
                    out[i] = Generation(None, "generation_error", f"{type(err).__name__}: {err}")
        return out


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0):
        self.model_name = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[Generation]:
        return asyncio.run(self._generate_all(prompts, params))

    async def _generate_all(self, prompts: list[Prompt], params: SamplingParams) -> list[Generation]:
        import httpx

        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limit = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=self.timeout_s, limits=limits) as client:
            return list(await asyncio.gather(*(self._one(client, limit, p, params, i) for i, p in enumerate(prompts))))

    def _request(self, prompt: Prompt, params: SamplingParams, index: int) -> tuple[str, dict]:
        body = {"model": self.model_name, "max_tokens": params.max_new_tokens, "temperature": params.temperature,
                "top_p": params.top_p, "seed": params.seed + index}
        if isinstance(prompt, str):
            return f"{self.base_url}/completions", {**body, "prompt": prompt}
        return f"{self.base_url}/chat/completions", {**body, "messages": prompt}

    async def _one(self, client, limit: asyncio.Semaphore, prompt: Prompt, params: SamplingParams,
                   index: int) -> Generation:
        import httpx

        url, body = self._request(prompt, params, index)
        failure = Generation(None, "generation_error", "no attempt made")
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                async with limit:
                    response = await client.post(url, json=body)
                if response.status_code == 200:
                    return _parse_completion(response.json())
                failure = Generation(None, "http_error", f"HTTP {response.status_code}: {response.text[:200]}")
                if response.status_code not in RETRYABLE:
                    return failure
                retry_after = _seconds(response.headers.get("retry-after"))
            except httpx.TimeoutException:
                failure = Generation(None, "timeout", f"no answer within {self.timeout_s:g} s")
            except (httpx.TransportError, ValueError, KeyError, IndexError) as err:
                failure = Generation(None, "http_error", f"{type(err).__name__}: {err}")
            if attempt < self.max_retries:
                delay = self.backoff_s * 2 ** attempt * (1 + random.random() / 2)  # jitter spreads retries out
                await asyncio.sleep(retry_after if retry_after is not None else delay)
        failure.detail = f"{failure.detail} (after {self.max_retries + 1} attempts)"
        return failure


def _parse_completion(payload: dict) -> Generation:
    choice = payload["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    return Generation(text or "", tokens=int((payload.get("usage") or {}).get("completion_tokens") or 0))


def _seconds(value: str | None) -> float | None:
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, chat_template: str | None = None, seed: int = 0):
        try:
            from vllm import LLM
        except ImportError:
            raise RuntimeError("the vllm backend needs vLLM: pip install 'winnow[vllm]' on a GPU machine") from None
        self.model_name = model
        self.llm = LLM(model=str(_local_model_dir(model)), seed=seed)
        self.chat_template = chat_template

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[Generation]:
        from vllm import SamplingParams as VLLMParams

        sampling = VLLMParams(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                              seed=params.seed)
        out: list[Generation | None] = [None] * len(prompts)
        for kind in (str, list):  # completions and chats go to vLLM in one call each
            idx = [i for i, p in enumerate(prompts) if isinstance(p, kind)]
            if not idx:
                continue
            try:
                batch = [prompts[i] for i in idx]
                results = (self.llm.generate(batch, sampling) if kind is str
                           else self.llm.chat(batch, sampling, chat_template=self.chat_template))
                for i, result in zip(idx, results, strict=True):
                    out[i] = Generation(result.outputs[0].text, tokens=len(result.outputs[0].token_ids))
            except Exception as err:  # noqa: BLE001
                for i in idx:
                    out[i] = Generation(None, "generation_error", f"{type(err).__name__}: {err}")
        return out


def load_backend(config):
    """The backend a rephrase stage's config describes (the stage builds it once per worker process)."""
    if config.backend == "transformers":
        return TransformersBackend(config.model, config.device, config.batch_size, config.chat_template)
    if config.backend == "vllm":
        return VLLMBackend(config.model, config.chat_template, config.seed)
    o = config.openai
    return OpenAIBackend(config.model, o.base_url, o.api_key_env, o.concurrency, o.timeout_s, o.max_retries,
                         o.backoff_s)


def load_token_counter(config):
    """tokens(texts) -> counts, for chunking: the model's tokenizer (or `tokenizer`), else ~4/3 tokens a word."""
    path = config.tokenizer or (config.model if config.backend != "openai" else None)
    if path is None:
        return lambda texts: [round(len(t.split()) * 4 / 3) for t in texts]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []

    return count


__all__ = ["Generation", "OpenAIBackend", "SamplingParams", "TransformersBackend", "VLLMBackend", "load_backend",
           "load_token_counter"]
