"""`openai`: an OpenAI-compatible images endpoint (`POST {OPENAI_BASE_URL}/images/generations`).

Many hosted and local servers speak this API. Configured only by environment variables (the
Streamlit app copies its secrets into the environment):

  OPENAI_API_KEY          required; sent as a Bearer token, never stored or logged
  OPENAI_BASE_URL         default https://api.openai.com/v1
  OPENAI_IMAGE_MODEL      default gpt-image-1
  OPENAI_IMAGE_SIZE       default 1024x1024
  OPENAI_IMAGE_QUALITY    optional (low, medium, high, standard, hd ... as the model accepts)
  OPENAI_RESPONSE_FORMAT  optional: b64_json or url (gpt-image models always answer b64_json)
  OPENAI_TIMEOUT_SECONDS  default 120
"""
from __future__ import annotations

import os
import re

import httpx

from . import ProgressFn, RenderResult, RenderTask, register
from .http_provider import HttpImageProvider, as_png, decode_base64_image, tls_context
from .prompt import compose

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SIZE = re.compile(r"^(\d{2,5}x\d{2,5}|auto)$")


class OpenAIImagesRenderer(HttpImageProvider):
    name = "openai"
    description = "OpenAI-compatible images API over HTTP (OPENAI_API_KEY, OPENAI_BASE_URL)."
    timeout_variable = "OPENAI_TIMEOUT_SECONDS"

    @property
    def key(self) -> str:
        return os.environ.get("OPENAI_API_KEY", "").strip()

    @property
    def base_url(self) -> str:
        return (os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/")

    def secrets(self) -> list[str]:
        return [self.key]

    def configuration_problem(self) -> str | None:
        if not self.key:
            return "OPENAI_API_KEY is not set"
        if not self.base_url.startswith(("http://", "https://")):
            return "OPENAI_BASE_URL must start with http:// or https://"
        size = os.environ.get("OPENAI_IMAGE_SIZE", "").strip()
        if size and not SIZE.match(size):
            return f"OPENAI_IMAGE_SIZE={size!r} must look like 1024x1024"
        fmt = os.environ.get("OPENAI_RESPONSE_FORMAT", "").strip()
        if fmt and fmt not in ("b64_json", "url"):
            return f"OPENAI_RESPONSE_FORMAT={fmt!r} must be b64_json or url"
        return None

    def prompt(self, task: RenderTask) -> str:
        return compose(task.concept_inputs, task.render_type)

    def request_body(self, prompt: str) -> dict:
        body = {"model": os.environ.get("OPENAI_IMAGE_MODEL", "").strip() or "gpt-image-1", "prompt": prompt,
                "n": 1, "size": os.environ.get("OPENAI_IMAGE_SIZE", "").strip() or "1024x1024"}
        quality = os.environ.get("OPENAI_IMAGE_QUALITY", "").strip()
        if quality:
            body["quality"] = quality
        fmt = os.environ.get("OPENAI_RESPONSE_FORMAT", "").strip()
        if fmt:
            body["response_format"] = fmt
        return body

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        prompt = self.begin(task, progress)
        where = self.public_url(self.base_url)
        url = f"{self.base_url}/images/generations"
        headers = {"Authorization": f"Bearer {self.key}"}
        progress(15, "asking openai")
        with httpx.Client(timeout=self.timeout(120.0), follow_redirects=True, verify=tls_context()) as client:
            response = self.call(lambda: client.post(url, json=self.request_body(prompt), headers=headers),
                                 progress, 15, "the image request", where)
            progress(70, "reading the answer")
            item = self._first_image(self.read_json(response, where), where)
            if item.get("b64_json"):
                data = decode_base64_image(item["b64_json"], self.name)
            else:
                progress(75, "downloading the image")
                data = self.download(str(item["url"]), client, progress, 75)
        progress(85, "encoding")
        png = as_png(data, self.name)
        progress(95, "saving")
        details = {"revisedPrompt": item["revised_prompt"]} if item.get("revised_prompt") else {}
        return RenderResult(png=png, prompt=prompt, details=details)

    def _first_image(self, body: dict, where: str) -> dict:
        data = body.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise self.fail(f"The openai provider at {where} answered without an image (no data[0]).")
        item = data[0]
        if not item.get("b64_json") and not item.get("url"):
            raise self.fail(f"The openai provider at {where} answered with neither b64_json nor url.")
        return item


register("openai", OpenAIImagesRenderer)
