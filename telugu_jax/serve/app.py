"""The HTTP server: an OpenAI-compatible chat-completions API, the chat page and the rating page.

    app = create_app(Engine(models), api_key=os.environ.get("KEY"), ratings=RatingStore(db, sheet))

Routes: `POST /v1/chat/completions` (stream or not), `GET /v1/models`, `GET /health`, `GET /` (chat page),
`GET /rate` (rating page) and its JSON API under `/rate/api/`, `GET /rate/export.csv`, and the Telugu web font
both pages link (`GET /fonts/telugu.css`, the woff2 files and their licence; `telugu_jax.webfont`).

A request becomes a prompt in the model's chat format (`build_prompt`): leading `system` (or
`developer`) messages are folded into the first user turn, since the format has no system role, and the
response says so (header `X-Telugu-Jax-System` and `telugu_jax.system_message` in the body); a line of any
message that starts with a role marker is neutralised so no one can forge a turn. A prompt that fills the
context is a 400; `max_tokens` is capped to the server's limit and to the room left in the context, and
the response says when (`telugu_jax.max_tokens`, `telugu_jax.max_tokens_asked`).

With a safety filter (`telugu_jax.safety`, on unless `--no-safety`), the prompt is checked before generation
and the answer before it reaches the user; streams then go out a checked sentence at a time (`guard`).

Every error is a JSON body in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) with
4xx for the client's mistakes; a client that hangs up (stream or not) cancels its row in the engine.
With an API key set, every route needs it: `Authorization: Bearer KEY` (what the openai client sends),
or the cookie that opening a page as `/?api_key=KEY` sets (the browser pages cannot send headers).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import pathlib
import threading
import time
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from telugu_jax import webfont
from telugu_jax.chat_format import ChatFormat, ChatFormatError, neutralise_markers
from telugu_jax.conversation import Turn
from telugu_jax.safety import guard
from telugu_jax.serve import schemas
from telugu_jax.serve.engine import Engine, Job, Result
from telugu_jax.serve.ratings import RatingError, RatingStore

PAGES = pathlib.Path(__file__).parent / "pages"
KEY_COOKIE = "telugu_jax_key"
STREAM_INTERVAL_S = 0.02  # streamed chunks go out at most this often (50 per second)
SYSTEM_NOTE = "folded into the first user turn (the chat format has no system role)"


class ApiError(Exception):
  def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
    super().__init__(message)
    self.status, self.message, self.code, self.param = status, message, code, param


def build_prompt(fmt: ChatFormat, messages: list[schemas.Message]) -> tuple[list[int], dict]:
  """Prompt ids in the chat format, and notes for the response. Raises `ApiError` (400) for message lists
  the format cannot hold."""
  notes: dict = {}
  system = []
  i = 0
  while i < len(messages) and messages[i].role in ("system", "developer"):
    system.append(messages[i].text().strip())
    i += 1
  rest = messages[i:]
  for m in rest:
    if m.role in ("system", "developer"):
      raise ApiError(400, "a system message is only supported at the start of the conversation", param="messages")
  if not rest:
    raise ApiError(400, "messages hold no user message: add one after the system message", param="messages")
  template = fmt.template
  turns = [Turn(m.role, neutralise_markers(m.text().strip(), template)) for m in rest]
  if any(t.content != m.text().strip() for t, m in zip(turns, rest, strict=True)):
    notes["role_markers"] = "neutralised: a line started with a role marker"
  system_text = "\n\n".join(s for s in system if s)
  if system_text:
    first = turns[0]
    turns[0] = Turn(first.role, neutralise_markers(system_text, template) + "\n\n" + first.content)
    notes["system_message"] = SYSTEM_NOTE
  try:
    ids = fmt.encode_prompt(turns).tolist()
  except ChatFormatError as e:
    raise ApiError(400, f"messages cannot form a conversation: {e}. Messages must alternate user and "
                   "assistant, start and end with a user message, and not be empty.", param="messages") from None
  return ids, notes


def _validation_message(exc: RequestValidationError) -> str:
  parts = []
  for err in exc.errors()[:5]:
    if err.get("type") == "json_invalid":
      return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
    loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    parts.append(f"{loc or 'body'}: {msg}")
  return "invalid request: " + "; ".join(parts)


class _ApiKey:
  """ASGI middleware: every route needs the key when one is set (pure ASGI, so streams and client
  disconnects pass through untouched)."""

  def __init__(self, app, key: str | None):
    self.app, self.key = app, key

  def _ok(self, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), self.key.encode())

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http" or not self.key:
      return await self.app(scope, receive, send)
    request = Request(scope)
    auth = request.headers.get("authorization", "")
    bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    if self._ok(bearer) or self._ok(request.cookies.get(KEY_COOKIE)):
      return await self.app(scope, receive, send)
    query_key = request.query_params.get("api_key")
    if request.method == "GET" and self._ok(query_key):  # a page opened with ?api_key=: keep it in a cookie
      response = RedirectResponse(request.url.remove_query_params("api_key").path, status_code=303)
      response.set_cookie(KEY_COOKIE, query_key, httponly=True, samesite="strict")
      return await response(scope, receive, send)
    message = ("this server needs an API key: send 'Authorization: Bearer KEY' (the openai client's api_key), "
               "or open the page as /?api_key=KEY")
    await JSONResponse(schemas.error_body(message, "authentication_error", code="invalid_api_key"),
                       status_code=401)(scope, receive, send)


def _sse(obj: dict | str) -> str:
  return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


class _Ticket:
  """A job's sink: events from the engine thread, queued for this request's coroutine.

  The engine thread appends to an inbox and wakes the event loop only when no wake-up is pending: under
  load one wake-up carries many tokens, instead of one cross-thread call (and GIL hand-over) per token."""

  def __init__(self):
    self.loop = asyncio.get_running_loop()
    self.events: collections.deque = collections.deque()
    self.ready = asyncio.Event()
    self._inbox: list = []
    self._lock = threading.Lock()
    self._scheduled = False

  def __call__(self, kind: str, value) -> None:  # runs on the engine thread
    with self._lock:
      self._inbox.append((kind, value))
      if self._scheduled:
        return
      self._scheduled = True
    try:
      self.loop.call_soon_threadsafe(self._drain)
    except RuntimeError:  # the event loop has closed: the server is shutting down
      pass

  def _drain(self) -> None:
    with self._lock:
      got, self._inbox, self._scheduled = self._inbox, [], False
    self.events.extend(got)
    self.ready.set()

  async def get(self) -> tuple[str, object]:
    while not self.events:
      self.ready.clear()
      await self.ready.wait()
    return self.events.popleft()

  def take_deltas(self) -> str:
    """The text of the deltas queued right now (they go out as one chunk)."""
    text = ""
    while self.events and self.events[0][0] == "delta":
      text += self.events.popleft()[1]
    return text


def create_app(engine: Engine, *, api_key: str | None = None, max_tokens_cap: int = 512,
               default_max_tokens: int = 256, ratings: RatingStore | None = None,
               safety: guard.Filter | None = None) -> FastAPI:
  """`safety`: a `telugu_jax.safety.SafetyFilter` checking prompts and answers (see `guard`), or None."""
  """The FastAPI app over a (not yet started) engine; the app starts and stops it with itself."""
  from contextlib import asynccontextmanager

  @asynccontextmanager
  async def lifespan(_app):
    engine.start()
    try:
      yield
    finally:
      engine.stop()

  app = FastAPI(title="telugu-jax", lifespan=lifespan)
  app.state.engine, app.state.ratings = engine, ratings
  app.add_middleware(_ApiKey, key=api_key)

  @app.exception_handler(ApiError)
  async def _api_error(_req, exc: ApiError):
    return JSONResponse(schemas.error_body(exc.message, code=exc.code, param=exc.param), status_code=exc.status)

  @app.exception_handler(RequestValidationError)
  async def _invalid(req: Request, exc: RequestValidationError):
    message = _validation_message(exc)
    if req.method == "POST" and "json" not in req.headers.get("content-type", ""):
      message += " (send the body as JSON with 'Content-Type: application/json')"
    return JSONResponse(schemas.error_body(message), status_code=400)

  @app.exception_handler(StarletteHTTPException)
  async def _http_error(_req, exc: StarletteHTTPException):
    message = str(exc.detail)
    if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
      message = "the request body could not be parsed: send one JSON object, UTF-8 encoded"
    return JSONResponse(schemas.error_body(message), status_code=exc.status_code)

  @app.exception_handler(RatingError)
  async def _rating_error(_req, exc: RatingError):
    return JSONResponse(schemas.error_body(str(exc)), status_code=400)

  @app.exception_handler(Exception)
  async def _unexpected(_req, exc: Exception):
    return JSONResponse(schemas.error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"),
                        status_code=500)

  # ---- API -----------------------------------------------------------------------------------------------
  @app.get("/health")
  async def health():
    stats = dict(engine.stats)
    stats["batch_sizes"] = dict(stats["batch_sizes"])
    return {"status": "ok", "models": list(engine.models), "engine": stats}

  @app.get("/v1/models")
  async def list_models():
    return {"object": "list", "data": [
        {"id": m.name, "object": "model", "created": 0, "owned_by": "telugu-jax", "source": m.source,
         "context_length": m.generator.config.max_seq_len} for m in engine.models.values()]}

  @app.post("/v1/chat/completions")
  async def chat_completions(req: schemas.ChatCompletionRequest, request: Request):
    served = engine.models.get(req.model)
    if served is None:
      raise ApiError(404, f"model {req.model!r} is not served here; GET /v1/models lists them: "
                     f"{', '.join(engine.models)}", code="model_not_found", param="model")
    ids, notes = build_prompt(served.fmt, req.messages)
    context = served.generator.config.max_seq_len
    if len(ids) >= context:
      raise ApiError(400, f"the prompt is {len(ids)} tokens and the model's context is {context}: shorten the "
                     "messages (drop early turns) so the answer has room", code="context_length_exceeded",
                     param="messages")
    asked = req.token_limit or default_max_tokens
    max_tokens = min(asked, max_tokens_cap, context - len(ids))
    notes["max_tokens"] = max_tokens
    if max_tokens < asked:
      notes["max_tokens_asked"] = asked
    headers = {"X-Telugu-Jax-System": "folded-into-first-user-turn"} if "system_message" in notes else {}
    cid = schemas.new_id()
    if safety is not None:
      system = "\n\n".join(m.text() for m in req.messages if m.role in ("system", "developer"))
      verdict = guard.check_prompt(safety, req.messages[-1].text(), system)
      if verdict is not None:
        notes["safety"] = verdict.note
        return _canned_response(req, cid, verdict, len(ids), notes, headers)
    ticket = _Ticket()
    job = Job(model=req.model, prompt_ids=ids, max_tokens=max_tokens, sink=ticket,
              temperature=1.0 if req.temperature is None else req.temperature,
              top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed, stop=req.stop_strings)
    engine.submit(job)
    if req.stream:
      include_usage = bool(req.stream_options and req.stream_options.include_usage)
      return StreamingResponse(_stream(job, ticket, req.model, cid, notes, len(ids), include_usage, safety),
                               media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers})
    result = await _wait(job, ticket, request)
    if result is None:
      return Response(status_code=499)  # the client left; nobody reads this
    notes["batch_size"] = result.batch_size
    text, finish = result.text, result.finish_reason
    if safety is not None and (verdict := guard.check_answer(safety, text)) is not None:
      text, finish, notes["safety"] = verdict.response, verdict.finish_reason, verdict.note
    return JSONResponse(schemas.completion(cid, req.model, text, finish, len(ids), result.completion_tokens, notes),
                        headers=headers)

  # ---- pages ---------------------------------------------------------------------------------------------
  @app.get("/", response_class=HTMLResponse)
  async def chat_page():
    return HTMLResponse((PAGES / "chat.html").read_text(encoding="utf-8"))

  @app.get("/rate", response_class=HTMLResponse)
  async def rate_page():
    return HTMLResponse((PAGES / "rate.html").read_text(encoding="utf-8"))

  @app.get("/fonts/{name}")
  async def font(name: str):
    if (found := webfont.asset(name)) is None:
      raise StarletteHTTPException(404, f"no font file {name!r}")
    return Response(found[0], media_type=found[1], headers={"Cache-Control": "public, max-age=86400"})

  @app.get("/rate/api/items")
  async def rate_items():
    return _store().items_json()

  @app.get("/rate/api/scores")
  async def rate_scores(rater: str):
    return {"rater": rater, "scores": _store().scores(rater)}

  @app.post("/rate/api/score")
  async def rate_score(body: dict):
    _store().save(str(body.get("rater", "")), str(body.get("item", "")), str(body.get("criterion", "")),
                  body.get("score"))
    return {"saved": True}

  @app.post("/rate/api/comment")
  async def rate_comment(body: dict):
    _store().save_comment(str(body.get("rater", "")), str(body.get("item", "")), body.get("comment", ""))
    return {"saved": True}

  @app.get("/rate/export.csv")
  async def rate_export(rater: str):
    name = f"{rater.strip()}.csv"  # the kit names the rater after the sheet's file name
    return Response(_store().export_csv(rater), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f"attachment; filename=\"{_ascii_name(name)}\"; filename*=UTF-8''{quote(name)}"})

  def _store() -> RatingStore:
    if ratings is None:
      raise ApiError(404, "no rating sheet loaded: start the server with --rate-sheet SHEET.csv (the blind sheet "
                     "the evaluation kit exports)", code="no_rating_sheet")
    return ratings

  return app


def _ascii_name(s: str) -> str:
  """A header-safe file name (headers are latin-1); the UTF-8 name goes in `filename*`."""
  return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in s)


async def _wait(job: Job, ticket: _Ticket, request: Request) -> Result | None:
  """The job's result; None (and the job cancelled) when the client hangs up first."""
  while True:
    try:
      kind, value = await asyncio.wait_for(ticket.get(), timeout=0.1)
    except TimeoutError:
      if await request.is_disconnected():
        job.cancelled.set()
        return None
      continue
    if kind == "done":
      return value
    if kind == "error":
      raise ApiError(500, value, code="generation_failed")


async def _stream(job: Job, ticket: _Ticket, model: str, cid: str, notes: dict, prompt_tokens: int,
                  include_usage: bool, safety: guard.Filter | None):
  created = int(time.time())
  checker = None if safety is None else guard.StreamGuard(safety)
  last_sent = 0.0

  def content(text: str) -> str:
    return _sse(schemas.chunk(cid, model, created, delta={"content": text}))

  try:
    yield _sse(schemas.chunk(cid, model, created, delta={"role": "assistant", "content": ""}, notes=notes))
    while True:
      kind, value = await ticket.get()
      if kind == "error":
        yield _sse(schemas.error_body(value, "server_error", code="generation_failed"))
        return
      if kind == "delta":
        # At most one chunk per STREAM_INTERVAL_S: the deltas that arrive meanwhile go out together. A fast
        # model then costs the event loop (and the GIL the decode loop's host callback needs) far less per
        # token, and nobody reads faster than that.
        if (wait := last_sent + STREAM_INTERVAL_S - time.monotonic()) > 0:
          await asyncio.sleep(wait)
        value += ticket.take_deltas()
        last_sent = time.monotonic()
        out = value if checker is None else checker.feed(value)
        if out:
          yield content(out)
        if checker is None or checker.verdict is None:
          continue
        job.cancelled.set()  # blocked: stop decoding, then say why
        while kind == "delta":
          kind, value = await ticket.get()
        if kind == "error":
          yield _sse(schemas.error_body(value, "server_error", code="generation_failed"))
          return
      elif checker is not None and (out := checker.feed("", final=True)):
        yield content(out)
      result: Result = value
      finish, extra = result.finish_reason, {"batch_size": result.batch_size}
      if checker is not None and checker.verdict is not None:
        yield content(("\n\n" if checker.sent else "") + checker.verdict.response)
        finish, extra["safety"] = checker.verdict.finish_reason, checker.verdict.note
      yield _sse(schemas.chunk(cid, model, created, delta={}, finish_reason=finish, notes=extra))
      if include_usage:
        yield _sse(schemas.chunk(cid, model, created, usage_=schemas.usage(prompt_tokens, result.completion_tokens)))
      yield _sse("[DONE]")
      return
  finally:
    job.cancelled.set()  # the client hung up (or we are done): free the row


def _canned_response(req: schemas.ChatCompletionRequest, cid: str, verdict: guard.Verdict, prompt_tokens: int,
                     notes: dict, headers: dict) -> Response:
  """The safety filter's answer to a prompt, in the shape the request asked for (no generation)."""
  if not req.stream:
    return JSONResponse(schemas.completion(cid, req.model, verdict.response, verdict.finish_reason, prompt_tokens, 0,
                                           notes), headers=headers)
  created = int(time.time())

  async def events():
    yield _sse(schemas.chunk(cid, req.model, created, delta={"role": "assistant", "content": ""}, notes=notes))
    yield _sse(schemas.chunk(cid, req.model, created, delta={"content": verdict.response}))
    yield _sse(schemas.chunk(cid, req.model, created, delta={}, finish_reason=verdict.finish_reason))
    if req.stream_options and req.stream_options.include_usage:
      yield _sse(schemas.chunk(cid, req.model, created, usage_=schemas.usage(prompt_tokens, 0)))
    yield _sse("[DONE]")

  return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
