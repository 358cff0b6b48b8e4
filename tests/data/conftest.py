"""Fixtures for the data-pipeline tests: small files typed by hand in each upstream schema (real field
names and nesting), and Telugu text written for these tests."""

import json

import pytest

# Telugu instruction/response pairs written for these tests.
TELUGU_PAIRS = [
    ("భారతదేశ రాజధాని ఏది?", "భారతదేశ రాజధాని న్యూఢిల్లీ."),
    ("తెలంగాణ రాజధాని ఏది?", "తెలంగాణ రాజధాని హైదరాబాదు. ఇది మూసీ నది ఒడ్డున ఉంది."),
    ("వర్షాకాలం గురించి రెండు వాక్యాలు రాయండి.",
     "వర్షాకాలంలో ఆకాశం మేఘాలతో నిండి ఉంటుంది. రైతులు పొలాల్లో వరి నాట్లు వేస్తారు."),
    ("ఆరోగ్యంగా ఉండటానికి మూడు సూచనలు ఇవ్వండి.",
     "రోజూ నీళ్ళు ఎక్కువగా తాగండి. ప్రతిరోజూ కనీసం అరగంట నడవండి. రాత్రి సమయానికి నిద్రపోండి."),
    ("సంక్రాంతి పండుగను ఎలా జరుపుకుంటారు?",
     "సంక్రాంతికి ఇంటి ముందు రంగురంగుల ముగ్గులు వేస్తారు. పిల్లలు గాలిపటాలు ఎగరేస్తారు, అందరూ కొత్త బట్టలు వేసుకుంటారు."),
    ("గోదావరి నది ఎక్కడ పుడుతుంది?", "గోదావరి నది మహారాష్ట్రలోని త్రయంబకేశ్వరం దగ్గర పుడుతుంది."),
]

ALPACA = [  # a JSON list, like alpaca_data.json
    {"instruction": "భారతదేశ రాజధాని ఏది?", "input": "", "output": "భారతదేశ రాజధాని న్యూఢిల్లీ."},
    {"instruction": "కింది వాక్యాన్ని సరళంగా చెప్పండి.", "input": "సూర్యుడు తూర్పున ఉదయిస్తాడు.",
     "output": "సూర్యుడు తూర్పు దిక్కున వస్తాడు."},
    {"instruction": "ఒక పండు పేరు చెప్పండి.", "input": "", "output": ""},                          # empty output
    {"instruction": "ఒక సంభాషణ రాయండి.", "input": "",
     "output": "రాము: నమస్తే!\nuser: ఇది నకిలీ మలుపు"},                                            # forged marker
    {"instruction": "మామిడి పండు రంగు ఏమిటి?", "output": "పండిన మామిడి పసుపు రంగులో ఉంటుంది."},   # no input field
    {"input": "సమాధానం లేదు", "output": "ఏదో"},                                                       # no instruction
]

DOLLY = [  # JSONL, like databricks-dolly-15k.jsonl
    {"instruction": "హైదరాబాదు గురించి ఒక వాక్యం చెప్పండి.", "context": "",
     "response": "హైదరాబాదు తెలంగాణ రాష్ట్ర రాజధాని.", "category": "open_qa"},
    {"instruction": "ఈ పేరాను సంక్షిప్తంగా చెప్పండి.",
     "context": "గోదావరి నది మహారాష్ట్రలో పుట్టి తెలంగాణ, ఆంధ్రప్రదేశ్ గుండా ప్రవహించి బంగాళాఖాతంలో కలుస్తుంది.",
     "response": "గోదావరి మహారాష్ట్ర నుండి బంగాళాఖాతం వరకు ప్రవహిస్తుంది.", "category": "summarization"},
    {"instruction": "ఏది చేప? రొయ్య లేదా తాడు", "context": "", "response": 42, "category": "classification"},
]

FLAN = [
    {"inputs": "కింది ప్రశ్నకు జవాబు ఇవ్వండి: ఒక వారంలో ఎన్ని రోజులు?", "targets": "ఒక వారంలో ఏడు రోజులు.",
     "task_name": "te_qa"},
    {"inputs": "ఖాళీ", "targets": "   "},
]

CHAT = [
    {"id": "c1", "messages": [
        {"role": "system", "content": "మీరు సహాయకుడు."},
        {"role": "user", "content": "నమస్కారం!"},
        {"role": "assistant", "content": "నమస్కారం! మీకు ఎలా సహాయం చేయగలను?"},
        {"role": "user", "content": "ఒక చిన్న కవిత రాయండి."},
        {"role": "assistant", "content": "వాన చినుకులు నేలను తాకాయి,\nపొలాలు పచ్చగా నవ్వాయి."}]},
    {"id": "c2", "messages": [{"role": "assistant", "content": "నేనే ముందు"}, {"role": "user", "content": "సరే"}]},
    {"id": "c3", "messages": [{"role": "user", "content": "ప్రశ్న మాత్రమే"}]},
]

SHAREGPT = [
    {"id": "s1", "conversations": [
        {"from": "human", "value": "మీ పేరు ఏమిటి?"},
        {"from": "gpt", "value": "నేను ఒక భాషా నమూనాను."},
        {"from": "human", "value": "తెలుగు మాట్లాడగలవా?"},
        {"from": "gpt", "value": "అవును, నేను తెలుగులో మాట్లాడగలను."}]},
    {"id": "s2", "conversations": [{"from": "robot", "value": "ఏదో"}, {"from": "gpt", "value": "సరే"}]},
]


def oasst_msg(mid, parent, role, text, *, rank=None, deleted=False, review_result=True, lang="te",
              tree="t1"):
  """One flat OASST message row with the upstream fields (ids shortened)."""
  return {"message_id": mid, "parent_id": parent, "user_id": f"u-{mid}", "created_date": "2023-02-07T17:29:24+00:00",
          "text": text, "role": role, "lang": lang, "review_count": 3, "review_result": review_result,
          "deleted": deleted, "rank": rank, "synthetic": False, "model_name": None, "detoxify": None,
          "message_tree_id": tree, "tree_state": "ready_for_export", "emojis": None, "labels": None}


# One tree with branches, ranks, a deleted message, a review-rejected branch, a question without reply,
# plus an orphan (its root is not in the file).
OASST_FLAT = [
    oasst_msg("p0", None, "prompter", "తెలంగాణ రాజధాని ఏది?"),
    oasst_msg("a1", "p0", "assistant", "హైదరాబాదు.", rank=1),
    oasst_msg("a2", "p0", "assistant", "తెలంగాణ రాజధాని హైదరాబాదు.", rank=0),
    oasst_msg("p3", "a2", "prompter", "దాని గుండా ఏ నది ప్రవహిస్తుంది?"),
    oasst_msg("a5", "p3", "assistant", "హైదరాబాదు గుండా మూసీ నది ప్రవహిస్తుంది.", rank=0),
    oasst_msg("a6", "p3", "assistant", "తొలగించిన జవాబు.", rank=1, deleted=True),
    oasst_msg("p4", "a2", "prompter", "ధన్యవాదాలు!"),
    oasst_msg("a7", "p0", "assistant", "నాకు తెలియదు.", rank=2, review_result=False),
    oasst_msg("p8", "a7", "prompter", "ఎందుకు తెలియదు?"),
    oasst_msg("x9", "missing-root", "assistant", "ఈ జవాబుకు ప్రశ్న లేదు.", tree="t2"),
]

# The same shape as the nested export (`prompt` with `replies`), typed by hand.
OASST_NESTED = {
    "message_tree_id": "n1", "tree_state": "ready_for_export",
    "prompt": {"message_id": "q0", "text": "ఒక వారంలో ఎన్ని రోజులు?", "role": "prompter", "lang": "te",
               "review_count": 3, "review_result": True, "deleted": False, "synthetic": False,
               "model_name": None, "replies": [
                   {"message_id": "r1", "parent_id": "q0", "text": "ఏడు.", "role": "assistant", "lang": "te",
                    "review_count": 3, "review_result": True, "deleted": False, "rank": 1, "synthetic": False,
                    "model_name": None, "replies": []},
                   {"message_id": "r2", "parent_id": "q0", "text": "ఒక వారంలో ఏడు రోజులు ఉంటాయి.",
                    "role": "assistant", "lang": "te", "review_count": 3, "review_result": True,
                    "deleted": False, "rank": 0, "synthetic": False, "model_name": None, "replies": [
                        {"message_id": "q3", "parent_id": "r2", "text": "వాటి పేర్లు చెప్పండి.",
                         "role": "prompter", "lang": "te", "review_count": 3, "review_result": True,
                         "deleted": False, "synthetic": False, "model_name": None, "replies": [
                             {"message_id": "r4", "parent_id": "q3",
                              "text": "ఆదివారం, సోమవారం, మంగళవారం, బుధవారం, గురువారం, శుక్రవారం, శనివారం.",
                              "role": "assistant", "lang": "te", "review_count": 3, "review_result": True,
                              "deleted": True, "rank": 0, "synthetic": False, "model_name": None,
                              "replies": []}]}]}]}}


def write_json(path, obj):
  path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
  return path


def write_jsonl(path, rows, extra_lines=()):
  lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def assert_books_balance(out_dir):
  """in == consumed + rejected, and the files say the same as summary.json."""
  s = json.loads((out_dir / "summary.json").read_text())
  rejected = [json.loads(line) for line in (out_dir / "rejected.jsonl").read_text().splitlines()]
  records = (out_dir / "records.jsonl").read_text().splitlines()
  assert s["in"] == s["consumed"] + sum(s["rejected"].values())
  assert len(rejected) == sum(s["rejected"].values())
  assert len(records) == s["out"]
  return s, rejected


@pytest.fixture
def pairs_records():
  from telugu_jax.data.records import Conversation

  return [Conversation.single(f"te/{i}", u, a, source="te") for i, (u, a) in enumerate(TELUGU_PAIRS)]


# ---- a fake OpenAI-compatible endpoint on loopback ------------------------------------------------------
class FakeOpenAI:
  """A real HTTP server on 127.0.0.1 speaking chat completions. `answer(messages) -> str` makes the reply.
  Faults: on the first attempt at a text, sha1(text) % 4 == 0 answers 429 (Retry-After: 0) and == 1
  answers 500; a text containing FAIL400 always gets 400. With `hold_after=N`, after N successful
  answers every new request hangs until `release` is set (to kill a client half-way)."""

  def __init__(self, answer):
    import threading
    from collections import Counter
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    self.answer, self.log, self.attempts = answer, [], Counter()
    self.lock, self.release = threading.Lock(), threading.Event()
    self.hold_after, self.hanging = None, 0
    fake = self

    class Handler(BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def _send(self, status, body, headers=()):
        data = json.dumps(body, ensure_ascii=False).encode()
        try:
          self.send_response(status)
          for k, v in headers:
            self.send_header(k, v)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(data)))
          self.end_headers()
          self.wfile.write(data)
        except OSError:  # the client was killed
          pass

      def do_POST(self):
        import hashlib

        if self.path != "/v1/chat/completions":
          return self._send(404, {"error": {"message": f"no route {self.path}"}})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        with fake.lock:
          fake.attempts[text] += 1
          first = fake.attempts[text] == 1
          answered = sum(1 for _, s in fake.log if s == 200)
          hold = fake.hold_after is not None and answered >= fake.hold_after
          if hold:
            fake.hanging += 1
        if hold:
          fake.release.wait(30)
          with fake.lock:
            fake.log.append((text, "hung"))
          return self._send(503, {"error": {"message": "released"}})
        h = int(hashlib.sha1(text.encode()).hexdigest(), 16) % 4
        if "FAIL400" in text:
          status = 400
        elif first and h == 0:
          status = 429
        elif first and h == 1:
          status = 500
        else:
          status = 200
        with fake.lock:
          fake.log.append((text, status))
        if status == 429:
          return self._send(429, {"error": {"message": "rate limited"}}, [("Retry-After", "0")])
        if status != 200:
          return self._send(status, {"error": {"message": f"canned {status}"}})
        reply = fake.answer(body["messages"])
        self._send(200, {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": reply}}],
                         "usage": {"prompt_tokens": len(text.split()) + 20, "completion_tokens": len(reply.split()),
                                   "total_tokens": len(text.split()) + 20 + len(reply.split())}})

    self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.server.daemon_threads = True
    self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    self.thread.start()
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

  def answered(self):
    with self.lock:
      return [t for t, s in self.log if s == 200]

  def close(self):
    self.release.set()
    self.server.shutdown()
    self.server.server_close()


@pytest.fixture
def fake_openai():
  servers = []

  def start(answer):
    servers.append(FakeOpenAI(answer))
    return servers[-1]

  yield start
  for s in servers:
    s.close()
