"""ASKG prompts from a chat endpoint (`stdd prompts`, `stdd_fast.askg.generate_askg`), against a real HTTP server.

The server is a `ThreadingHTTPServer` on loopback speaking the chat-completions protocol; it answers
each (stage, class) from a script and counts the requests. The files generated are read by the
existing loaders and `build_classifier`; bad answers, 429/5xx, timeouts and a server that dies are
retried, reported per class and resumed; reruns come from the cache. The rule-based stage 2 is
checked unchanged on the released ASKG files.
"""

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from helpers import randomize_, report

from stdd_fast import ClassifierError, ConfigError, build_classifier, create_model, safe_yaml, save_checkpoint
from stdd_fast.askg import generate_askg
from stdd_fast.askg.client import ChatClient
from stdd_fast.askg.messages import PROMPT_VERSION, parse_answer
from stdd_fast.askg.schema import AnswerError, check_askg, check_xprompt
from stdd_fast.cli import main
from stdd_fast.prompts import askg_clauses, prompt_grid, read_askg, read_class_names, read_xprompt

LABEL_DB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stdd-label-db" / "label_db"
needs_label_db = pytest.mark.skipif(not LABEL_DB.is_dir(), reason=f"official label data absent ({LABEL_DB})")
MODEL = "test-llm"
CLASSES = ["forklift reversing", "person climbing fence", "Yes", "stacking pallets"]


# -- a chat-completions server on loopback ------------------------------------------------------------------------


def askg_record(label: str) -> dict:
    """A well-formed stage 1 record; its triples name the class, so every class gets its own prompts."""
    a = label.lower()
    return {
        "label": a,
        "obj_en_li": ["pallet", "fence", a],
        "obj_rel_triples": ["<pallet, rests on, fence>", f"<fence, surrounds, {a} area>"],
        "act_obj_triples": [f"<{a}, moves, pallet>", f"<{a}, needs, a clear view>"],
        "sub_act_en_li": ["looking back", f"{a} slowly"],
        "act_rel_triples": [f"<{a}, starts with, looking back>", f"<looking back, precedes, {a} slowly>"],
    }


def xprompt_record(label: str) -> dict:
    a = label.lower()
    return {
        "label": a,
        "xprompt_oo": ["where a pallet rests on the fence", f"where the fence surrounds the {a} area"],
        "xprompt_ao": ["which moves a pallet", "which needs a clear view"],
        "xprompt_aa": ["starting with looking back", f"where looking back precedes {a} slowly"],
    }


def ok(record: dict, style: str = "yaml") -> tuple:
    """A 200 answer holding ``record`` the way chat models write it."""
    text = yaml.safe_dump(record, sort_keys=False)
    content = {
        "yaml": text,
        "fenced": f"Here is the record:\n```yaml\n{text}```\nIt follows the format.",
        "json": json.dumps(record, indent="\t"),
        "wrapped": yaml.safe_dump({record["label"]: record}, sort_keys=False),
        "thinking": f"<think>objects first, then relations</think>\n{text}",
    }[style]
    return ("answer", content)


def good(stage: str, label: str, attempt: int) -> tuple:
    return ok(askg_record(label) if stage == "askg" else xprompt_record(label))


_USER = re.compile(r"^action (entity: \[(?P<entity>.*)\]|label: (?P<label>.*?)\n)", re.S)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out and hung up: expected here
        pass


class ChatServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 answering from ``script(stage, class, attempt)``.

    A reply is ("answer", content) | ("status", code, headers) | ("sleep", seconds, reply) | ("die",):
    the last closes the connection unanswered and stops the server. ``calls`` counts requests per
    (stage, class); ``last`` keeps the messages of each (stage, class)'s last request.
    """

    def __init__(self, script, port: int = 0) -> None:
        self.script, self.calls, self.last, self.headers, self.models = script, Counter(), {}, [], set()
        self._lock = threading.Lock()
        chat = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self.reply(("status", 404, {}))
                stage, label = chat.parse(body["messages"])
                with chat._lock:
                    attempt = chat.calls[stage, label]
                    chat.calls[stage, label] += 1
                    chat.last[stage, label] = body["messages"]
                    chat.headers.append(self.headers.get("Authorization"))
                    chat.models.add(body["model"])
                return self.reply(chat.script(stage, label, attempt))

            def reply(self, what):
                if what[0] == "sleep":
                    time.sleep(what[1])
                    return self.reply(what[2])
                if what[0] == "die":  # stop listening first, so the client's retry finds the port closed
                    chat.stop()
                    self.close_connection = True
                    return None
                if what[0] == "status":
                    code, headers, data = what[1], what[2], b'{"error": {"message": "scripted"}}'
                else:
                    code, headers = 200, {}
                    data = json.dumps({
                        "id": "x", "object": "chat.completion", "model": MODEL,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": what[1]},
                                     "finish_reason": "stop"}],
                    }).encode()  # fmt: skip
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                return None

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._stopped = False

    @staticmethod
    def parse(messages: list[dict]) -> tuple[str, str]:
        """(stage, class) of a request: the last user message naming an action (a correction names none)."""
        for m in reversed(messages):
            match = _USER.match(m["content"] + "\n") if m["role"] == "user" else None
            if match:
                return ("askg", match["entity"]) if match["entity"] is not None else ("xprompt", match["label"])
        raise AssertionError(f"no action in {messages}")

    @property
    def requests(self) -> int:
        return sum(self.calls.values())

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    """``serve(script, port=0)`` starts a ChatServer; every one started is stopped at teardown."""
    servers = []

    def start(script, port: int = 0) -> ChatServer:
        servers.append(ChatServer(script, port))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def client(server: ChatServer, **kw) -> ChatClient:
    return ChatClient(server.url, MODEL, **{"timeout": 5.0, "retries": 2, "backoff": 0.01, "max_backoff": 0.2, **kw})


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=11)


# -- well-formed answers: files the loaders and build_classifier take ---------------------------------------------


def test_well_formed_answers_give_files_the_loaders_and_build_classifier_take(serve, model, tmp_path):
    styles = dict(zip(CLASSES, ("yaml", "fenced", "json", "thinking"), strict=True))

    def script(stage, label, attempt):
        record = askg_record(label) if stage == "askg" else xprompt_record(label)
        name = next(c for c in CLASSES if c.lower() == label)
        return ok(record, "wrapped" if stage == "xprompt" else styles[name])

    server = serve(script)
    out = tmp_path / "classes_ASKG_mine.yml"
    with client(server) as c:
        run = generate_askg(CLASSES, c, out, concurrency=3, cache_dir=None)
    assert run.ok and (run.asked, run.cached, run.kept, run.requests) == (4, 0, 0, 4)
    assert list(run.records) == CLASSES and run.output == out
    head = out.read_text().splitlines()[:7]
    assert head[0].startswith("# Generated by `stdd prompts`")
    assert {f"# endpoint: {server.url}", f"# model: {MODEL}", f"# prompt_version: {PROMPT_VERSION}"} <= set(head)
    assert any(re.fullmatch(r"# date: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line) for line in head)

    clauses, skipped = read_askg(out)  # the existing loader, unchanged rules
    assert list(clauses) == CLASSES and not skipped
    for name in CLASSES:
        assert clauses[name] == askg_clauses(askg_record(name), name)[0] and len(clauses[name]) == 6
    clf = build_classifier(model, askg=out)
    n_max = max(len(row) for row in prompt_grid(CLASSES, list(clauses.values()), ["{}"]))  # prompts per template
    assert n_max == 7 and clf.weights.shape == (4, 8 * n_max, 32) and clf.classes == CLASSES
    print("generated ASKG classifier", tuple(clf.weights.shape))

    # --xprompt: the same file resumed (stage 1 kept), stage 2 asked; it reads as ASKG and as xprompt
    with client(server) as c:
        run = generate_askg(CLASSES, c, out, xprompt=True, cache_dir=None)
    assert run.ok and (run.kept, run.asked, run.requests) == (0, 4, 4)
    assert sum(v for (stage, _), v in server.calls.items() if stage == "askg") == 4  # stage 1 not asked again
    entries = read_xprompt(out)
    assert entries["Yes"] == [c for f in ("xprompt_oo", "xprompt_ao", "xprompt_aa") for c in xprompt_record("Yes")[f]]
    assert read_askg(out)[0] == clauses
    clf = build_classifier(model, CLASSES, xprompt=out)
    assert clf.weights.shape == (4, 8 * 7, 32)
    assert clf.prompts[0][1] == "a human action of forklift reversing, where a pallet rests on the fence."

    # the command line builds from it like from the official files
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    for flag in ("--askg", "--xprompt"):
        art = tmp_path / f"clf{flag}.safetensors"
        assert main(["build-classifier", "--weights", str(ckpt), flag, str(out), "-o", str(art)]) == 0


def test_answers_are_parsed_and_validated():
    record = askg_record("Forklift Reversing")
    for style in ("yaml", "fenced", "json", "wrapped", "thinking"):
        assert check_askg(parse_answer(ok(record, style)[1]), "forklift reversing")["act_obj_triples"][0] == (
            "<forklift reversing, moves, pallet>"
        )
    listed = {**record, "act_obj_triples": [["forklift reversing", "moves", "pallet"]]}  # K400's file has this form
    assert check_askg(listed, "forklift reversing")["act_obj_triples"] == ["<forklift reversing, moves, pallet>"]
    bad = {
        "label": {**record, "label": "forklift"},
        "two parts": {**record, "obj_rel_triples": ["<eye, area where makeup goes>"]},
        "empty part": {**record, "obj_rel_triples": ["<pallet, , fence>"]},
        "duplicate": {**record, "act_obj_triples": ["<a, b, c>", "<A,  b, c>"]},
        "comma": {**record, "act_obj_triples": [["a", "b, c", "d"]]},
        "control": {**record, "sub_act_en_li": ["looking\x1b[31m back"]},
        "too long": {**record, "obj_en_li": ["x" * 101]},
        "too many": {**record, "obj_rel_triples": [f"<a, b, c{i}>" for i in range(17)]},
        "not a list": {**record, "act_rel_triples": "<a, b, c>"},
        "no triples": {"label": "forklift reversing"},
    }
    for why, data in bad.items():
        with pytest.raises(AnswerError):
            check_askg(data, "forklift reversing")
            pytest.fail(why)
    clauses = xprompt_record("x")
    assert check_xprompt({**clauses, "xprompt_oo": [", where a pallet rests.", "where b"]}, "x", askg_record("x"))[
        "xprompt_oo"
    ] == ["where a pallet rests", "where b"]
    with pytest.raises(AnswerError, match="one per triple"):
        check_xprompt({**clauses, "xprompt_aa": ["starting with looking back"]}, "x", askg_record("x"))
    for text in ("", "   ", None, "label: [unclosed", "key: 1\nkey: 2", "a: &x 1\nb: *x", "x" * 40_000):
        with pytest.raises(AnswerError):
            parse_answer(text)


# -- what goes wrong, per class: retried, reported, never a lost class ---------------------------------------------


def test_unusable_answers_are_asked_again_then_reported_per_class(serve, tmp_path):
    def script(stage, label, attempt):
        record = askg_record(label)
        if label == "malformed" and attempt == 0:
            return ("answer", "label: malformed\nobj_rel_triples: [<pallet, rests on\n")
        if label == "empty" and attempt < 2:
            return ("answer", "")
        if label == "wrong label":
            return ok({**record, "label": "something else"})
        if label == "duplicates":
            return ok({**record, "act_obj_triples": record["act_obj_triples"] * 2})
        return ok(record)

    classes = ["fine", "malformed", "empty", "wrong label", "duplicates", "also fine"]
    server = serve(script)
    out = tmp_path / "out.yml"
    with client(server) as c:
        run = generate_askg(classes, c, out, concurrency=4, answer_retries=2, cache_dir=tmp_path / "cache")
    assert list(run.records) == ["fine", "malformed", "empty", "also fine"]
    assert list(run.failed) == ["wrong label", "duplicates"]
    assert "label is 'something else'" in run.failed["wrong label"] and "3 attempts" in run.failed["wrong label"]
    assert "repeats" in run.failed["duplicates"]
    assert [server.calls["askg", c] for c in classes] == [1, 2, 3, 3, 3, 1]
    retry = server.last["askg", "malformed"]
    assert retry[-1]["role"] == "user" and "could not be used: the answer is not YAML" in retry[-1]["content"]
    assert list(read_askg(out)[0]) == list(run.records)  # the file holds every class that worked, in order
    print("requests", dict(server.calls))

    # the rerun asks only for the two that failed (now answered well): nothing else is lost or asked again
    fixed = serve(good)
    with client(fixed) as c:
        again = generate_askg(classes, c, out, cache_dir=tmp_path / "cache")
    assert again.ok and (again.kept, again.asked, again.requests) == (4, 2, 2)
    assert list(read_askg(out)[0]) == classes


def test_429_5xx_and_timeouts_are_retried_with_backoff(serve, tmp_path):
    seen = {}

    def script(stage, label, attempt):
        seen.setdefault(label, []).append(time.monotonic())
        if label == "rate limited" and attempt == 0:
            return ("status", 429, {"Retry-After": "0.3"})
        if label == "overloaded" and attempt < 2:
            return ("status", 503, {})
        if label == "slow once" and attempt == 0:
            return ("sleep", 1.0, good(stage, label, attempt))
        if label == "always slow":
            return ("sleep", 1.0, good(stage, label, attempt))
        if label == "bad request":
            return ("status", 400, {})
        return good(stage, label, attempt)

    classes = ["rate limited", "overloaded", "slow once", "always slow", "bad request", "fine"]
    server = serve(script)
    with client(server, timeout=0.4, retries=2, max_backoff=1.0) as c:
        run = generate_askg(classes, c, tmp_path / "out.yml", concurrency=6, cache_dir=None)
    assert list(run.records) == ["rate limited", "overloaded", "slow once", "fine"]
    assert "no answer within 0.4 s" in run.failed["always slow"] and "(3 attempts)" in run.failed["always slow"]
    assert "HTTP 400" in run.failed["bad request"]
    counts = [server.calls["askg", c] for c in classes]
    assert counts == [2, 3, 2, 3, 1, 1], counts
    waited = report("Retry-After 0.3 s honoured: waited (s)", seen["rate limited"][1] - seen["rate limited"][0])
    assert waited >= 0.3


def test_a_server_that_dies_mid_run_loses_no_class_and_the_rerun_resumes(serve, tmp_path):
    classes = [f"action {i}" for i in range(6)]

    def dies_at_the_fourth(stage, label, attempt):
        return ("die",) if label == "action 3" else good(stage, label, attempt)

    server = serve(dies_at_the_fourth)
    out, cache = tmp_path / "out.yml", tmp_path / "cache"
    with client(server, retries=1) as c:
        run = generate_askg(classes, c, out, concurrency=1, cache_dir=cache)
    assert list(run.records) == classes[:3]
    assert list(run.failed) == classes[3:]
    assert "cannot connect" in run.failed["action 3"] and "(2 attempts)" in run.failed["action 3"]
    assert all(run.failed[c].startswith("not asked:") and "rerun to resume" in run.failed[c] for c in classes[4:])
    assert list(read_askg(out)[0]) == classes[:3]  # a loadable file of what was done
    assert "# classes: 3 of 6, 3 not done yet or failed" in out.read_text()

    revived = serve(good, port=server.port)  # the same endpoint again
    with client(revived) as c:
        again = generate_askg(classes, c, out, concurrency=2, cache_dir=cache)
    assert again.ok and (again.kept, again.asked) == (3, 3)
    assert sorted(label for _, label in revived.calls) == classes[3:]
    assert list(read_askg(out)[0]) == classes


def test_a_rerun_is_served_from_the_cache(serve, tmp_path):
    server = serve(good)
    cache = tmp_path / "cache"
    with client(server) as c:
        first = generate_askg(CLASSES[:3], c, tmp_path / "a.yml", xprompt=True, cache_dir=cache)
    assert first.ok and server.requests == 6  # two stages per class
    before = server.requests
    with client(server) as c:  # a new file: nothing to resume from, all from the cache
        again = generate_askg(CLASSES[:3], c, tmp_path / "b.yml", xprompt=True, cache_dir=cache)
    assert server.requests - before == 0 and again.requests == 0 and again.cached == 3
    assert again.records == first.records
    assert (tmp_path / "a.yml").read_text().split("\n\n", 1)[1] == (tmp_path / "b.yml").read_text().split("\n\n", 1)[1]
    with client(server) as c:  # a longer list asks only for what is new
        longer = generate_askg(CLASSES, c, tmp_path / "c.yml", xprompt=True, cache_dir=cache)
    assert longer.ok and server.requests - before == 2 and (longer.cached, longer.asked) == (3, 1)
    with ChatClient(server.url, "another-model", timeout=5.0) as other:  # another model: another cache key
        assert generate_askg(CLASSES[:1], other, tmp_path / "d.yml", cache_dir=cache).requests == 1
    assert server.models == {MODEL, "another-model"}


# -- the command line ---------------------------------------------------------------------------------------------


def test_cli_prompts(serve, tmp_path, capsys, monkeypatch):
    def script(stage, label, attempt):
        return ("status", 500, {}) if label == "broken" else good(stage, label, attempt)

    server = serve(script)
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("# my classes\nforklift reversing\nperson climbing fence\n")
    out = tmp_path / "mine.yml"
    common = ["--endpoint", server.url, "--model", MODEL, "--cache-dir", str(tmp_path / "cache"), "--retries", "1"]
    monkeypatch.setenv("MY_KEY", "sk-local")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert (
        main(["prompts", "--classes-file", str(classes_file), *common, "-o", str(out), "--api-key-env", "MY_KEY"]) == 0
    )
    stdout, stderr = capsys.readouterr()
    assert stdout.startswith(f"wrote {out}: 2 of 2 classes (2 asked") and "--askg" in stdout and not stderr
    assert server.headers == ["Bearer sk-local"] * 2
    assert list(read_askg(out)[0]) == read_class_names(classes_file)

    rc = main(["prompts", "forklift reversing", "broken", "waving", *common, "-o", str(out), "--xprompt", "--json"])
    stdout, stderr = capsys.readouterr()
    summary = json.loads(stdout)
    assert rc == 1 and summary["records"] == 2 and list(summary["failed"]) == ["broken"]
    assert "HTTP 500" in stderr and "stdd: error: class 'broken':" in stderr
    assert stderr.strip().endswith("1 of 3 classes failed; rerun the command to ask again")

    foreign = tmp_path / "notes.yml"
    foreign.write_text("mine: true\n")
    cases = {
        "no classes": [*common, "-o", str(out)],
        "both": ["x", "--classes-file", str(classes_file), *common, "-o", str(out)],
        "foreign -o": ["x", *common, "-o", str(foreign)],
        "no folder": ["x", *common, "-o", str(tmp_path / "absent" / "out.yml")],
        "no key": ["x", *common, "-o", str(out), "--api-key-env", "STDD_TEST_UNSET_KEY"],
        "bad url": ["x", "--endpoint", "127.0.0.1:1", "--model", MODEL, "-o", str(out)],
    }
    for why, args in cases.items():
        assert main(["prompts", *args]) == 2, why
        err = capsys.readouterr().err
        assert err.startswith("stdd: error:") and len(err.strip().splitlines()) == 1, (why, err)
    assert foreign.read_text() == "mine: true\n"  # never overwritten


def test_generate_argument_errors(serve):
    server = serve(good)
    with client(server) as c:
        for bad in ("one string", [], ["a", "a"], ["a\nb"]):
            with pytest.raises((ConfigError, ClassifierError)):
                generate_askg(bad, c, cache_dir=None)
        with pytest.raises(ConfigError, match="concurrency"):
            generate_askg(["a"], c, cache_dir=None, concurrency=0)
    assert server.requests == 0


# -- the released files: the rule-based stage 2 gives today's prompts ------------------------------------------------

# sha256 of json.dumps({class: askg_clauses(entry, class)}) over each released ASKG file, and of read_askg's
# (clauses, skipped) where it loads, taken before this change (rendering must not move)
RULES_DIGEST = {
    "k400": ("a831d254ae64113c25e0e860c73a877fd5efee38346734a8d4714e8efd614261", None),
    "ucf101": (
        "7a3d0aaa71af249231b0d086b480fe7539aacfd4a3abe94bb4e5719cfd04c6bc",
        "0cb8b12b967f115ab6033df8cccd716c26de47d665f83ad2cb3b7a9bf3be1469",
    ),
    "hmdb51": (
        "49358738944bddddf3963e296726caf0d4d491cc75220d0ba173ed09e8ddd72b",
        "169c66dfd32547f2732634672d1d95cd0a05673acaf6cea992888a4838fe7273",
    ),
}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()


@needs_label_db
@pytest.mark.parametrize("dataset", sorted(RULES_DIGEST))
def test_rule_based_stage2_is_unchanged_on_the_released_files(dataset):
    path = LABEL_DB / f"classes_ASKG_{dataset}.yml"
    data = safe_yaml.load(path, "ASKG", ClassifierError)
    rules, loaded = RULES_DIGEST[dataset]
    assert _digest({k: askg_clauses(v, k) for k, v in data.items()}) == rules
    if loaded is not None:
        assert _digest(read_askg(path)) == loaded


@needs_label_db
def test_released_records_through_the_endpoint_render_as_the_released_file(serve, tmp_path):
    """Serve released UCF101 records as the answers: the generated file gives exactly the released file's clauses."""
    released = safe_yaml.load(LABEL_DB / "classes_ASKG_ucf101.yml", "ASKG", ClassifierError)
    usable = {}
    for name, entry in released.items():  # the records that pass the generation schema (some have 2-part triples)
        try:
            check_askg(entry, name)
        except AnswerError:
            continue
        usable[name] = entry
        if len(usable) == 8:
            break
    by_label = {name.lower(): entry for name, entry in usable.items()}
    server = serve(lambda stage, label, attempt: ok(by_label[label]))
    out = tmp_path / "ucf8.yml"
    with client(server) as c:
        run = generate_askg(list(usable), c, out, cache_dir=None)
    assert run.ok
    expected = read_askg(LABEL_DB / "classes_ASKG_ucf101.yml")[0]
    assert read_askg(out)[0] == {name: expected[name] for name in usable}
    every = {c for f in ("k400", "ucf101", "hmdb51") for c in read_class_names(LABEL_DB / f"classes_label_{f}.yml")}
    assert "repotting a plant" not in {c.lower() for c in every}  # the one-shot example is none of theirs
