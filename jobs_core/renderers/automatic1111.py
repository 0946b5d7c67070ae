"""`automatic1111`: a Stable Diffusion WebUI server (`POST {A1111_BASE_URL}/sdapi/v1/txt2img`).

Configured only by environment variables:

  A1111_BASE_URL         required, e.g. http://127.0.0.1:7860 (the WebUI started with --api)
  A1111_AUTH             optional user:password when the WebUI runs with --api-auth; never logged
  A1111_STEPS            default 25
  A1111_WIDTH/HEIGHT     default 768 x 512 (landscape, like the drawing sheet)
  A1111_CFG_SCALE        default 7
  A1111_SAMPLER          optional sampler name
  A1111_TIMEOUT_SECONDS  default 300
"""
from __future__ import annotations

import hashlib
import json
import os

import httpx

from . import ProgressFn, RenderResult, RenderTask, register
from .http_provider import HttpImageProvider, as_png, decode_base64_image, env_number, tls_context
from .prompt import NEGATIVE, compose


class Automatic1111Renderer(HttpImageProvider):
    name = "automatic1111"
    description = "Stable Diffusion WebUI (AUTOMATIC1111) txt2img API over HTTP (A1111_BASE_URL)."
    timeout_variable = "A1111_TIMEOUT_SECONDS"

    @property
    def base_url(self) -> str:
        return os.environ.get("A1111_BASE_URL", "").strip().rstrip("/")

    @property
    def auth(self) -> tuple[str, str] | None:
        raw = os.environ.get("A1111_AUTH", "")
        if not raw:
            return None
        user, _, password = raw.partition(":")
        return user, password

    def secrets(self) -> list[str]:
        auth = self.auth
        return [auth[1], os.environ.get("A1111_AUTH", "")] if auth else []

    def configuration_problem(self) -> str | None:
        if not self.base_url:
            return "A1111_BASE_URL is not set"
        if not self.base_url.startswith(("http://", "https://")):
            return "A1111_BASE_URL must start with http:// or https://"
        if os.environ.get("A1111_AUTH") and ":" not in os.environ["A1111_AUTH"]:
            return "A1111_AUTH must look like user:password"
        return None

    def prompt(self, task: RenderTask) -> str:
        return compose(task.concept_inputs, task.render_type)

    def request_body(self, task: RenderTask, prompt: str) -> dict:
        # A seed from the brief: the same brief asks for the same picture.
        seed = int(hashlib.sha256(json.dumps(task.concept_inputs, sort_keys=True, default=str).encode())
                   .hexdigest()[:8], 16)
        body = {"prompt": prompt, "negative_prompt": NEGATIVE, "seed": seed,
                "steps": int(env_number("A1111_STEPS", 25, 1)), "cfg_scale": env_number("A1111_CFG_SCALE", 7, 1),
                "width": int(env_number("A1111_WIDTH", 768, 64)), "height": int(env_number("A1111_HEIGHT", 512, 64)),
                "batch_size": 1, "n_iter": 1}
        sampler = os.environ.get("A1111_SAMPLER", "").strip()
        if sampler:
            body["sampler_name"] = sampler
        return body

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        prompt = self.begin(task, progress)
        body = self.request_body(task, prompt)
        where = self.public_url(self.base_url)
        url = f"{self.base_url}/sdapi/v1/txt2img"
        progress(15, "asking automatic1111")
        with httpx.Client(timeout=self.timeout(300.0), auth=self.auth, verify=tls_context()) as client:
            response = self.call(lambda: client.post(url, json=body), progress, 15, "the txt2img request", where,
                                 estimate=lambda: self.generation_percent(client))
        progress(70, "reading the answer")
        images = self.read_json(response, where).get("images")
        if not isinstance(images, list) or not images:
            raise self.fail(f"The automatic1111 provider at {where} answered without images.")
        progress(85, "encoding")
        png = as_png(decode_base64_image(images[0], self.name), self.name)
        progress(95, "saving")
        return RenderResult(png=png, prompt=prompt, details={"seed": body["seed"]})


    def generation_percent(self, client: httpx.Client) -> int | None:
        """The WebUI's own progress (GET /sdapi/v1/progress) as the job's 15-70 %; None if unknown.

        Best effort: a WebUI without the endpoint, or a slow answer, just leaves the percent as is.
        """
        try:
            answer = client.get(f"{self.base_url}/sdapi/v1/progress", params={"skip_current_image": "true"},
                                timeout=2.0)
            share = float(answer.json().get("progress") or 0.0) if answer.status_code == 200 else 0.0
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return 15 + round(55 * min(max(share, 0.0), 1.0)) if share > 0 else None


register("automatic1111", Automatic1111Renderer)
