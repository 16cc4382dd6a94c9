"""The labelling page in headless Chromium: labels that are right, on any screen.

One browser and two in-process label servers serve every test here (a browser start is the slow part): one over
short prompts, one with a reward model over a prompt whose responses are markdown, a 1,500-character token and a
6,200-character text. Each test opens its own labeler (``?labeler=``) so the tests do not share answers. Saved
answers are read back through the server's API (``/api/item``), the way the page itself reads them.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request

import pytest
from conftest import chromium_browser, post, serving, write_jsonl

from rewardlab.label.server import create_app
from rewardlab.label.store import LabelStore

SHORT = [{"prompt": f"Question {i}?", "responses": [f"answer {i}.{j}" for j in range(4)]} for i in range(5)]

MARKDOWN = ("# Boiling an egg\n\n- one\n- **two** and *three*\n\n1. first\n2. second\n\nRun `x = 1` now.\n\n"
            "```python\nprint('<b>hi</b>')\n```\n\n<script>window.__pwned=1</script><img src=x "
            "onerror=\"window.__pwned=2\"> <b>not bold</b>")
TOKEN = "https://example.com/" + "a1b2c3" * 247  # 1,502 characters, nowhere to break
SENTENCE = "Responses this long used to push the save button off the screen, so it has to stay in view. "
LONG = "\n\n".join(SENTENCE * 5 for _ in range(14))  # ~6,300 characters
CODE = "Here is the token in code:\n\n```\n" + TOKEN + "\n```"
LONG_ITEM = {"prompt": "Explain, at length.", "responses": [MARKDOWN, f"see {TOKEN} end", LONG, "ok", CODE],
             "truncated": [False, False, True, False, False]}


class LengthModel:
    """A stand-in reward model (the page only needs scores): longer is better."""

    def score_batch(self, prompts, responses):
        return [float(len(r)) for r in responses]


class Page:
    """The browser, the two servers' addresses, and the measurements the tests make."""

    def __init__(self, browser, plain: str, model: str):
        self.browser, self.plain, self.model = browser, plain, model

    def open(self, url: str, item: int | None = 0):
        self.browser.get(url)
        self.ready(item)

    def ready(self, item: int | None, mode: str = "task"):
        from selenium.webdriver.support.ui import WebDriverWait

        sel = (f'body[data-state="ready"][data-mode="task"][data-item="{item}"]' if mode == "task" and item is not None
               else f'body[data-state="ready"][data-mode="{"done" if item is None else mode}"]')
        WebDriverWait(self.browser, 10, poll_frequency=0.05).until(lambda b: b.execute_script(
            "return document.querySelector(arguments[0])", sel))

    def keys(self, *keys):
        """Keys as a person types them: to whatever has the focus."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.browser).send_keys(*keys).perform()

    def js(self, script: str, *args):
        return self.browser.execute_script(script, *args)

    def viewport(self, width: int, height: int = 800):
        self.browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def label_of(self, index: int) -> str:
        return self.js(f'return document.querySelector(\'#ranking li[data-index="{index}"]\').dataset.label')

    def text(self, selector: str) -> str:
        return self.js("return document.querySelector(arguments[0]).textContent", selector)

    def fits(self) -> None:
        """Nothing is wider than the window."""
        width, inner = self.js("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= inner, f"the page is {width} px wide in a {inner} px window"

    def on_screen(self, element_id: str) -> None:
        """The element is inside the viewport and nothing covers it."""
        box, inner, hit = self.js("""const el = document.getElementById(arguments[0]), b = el.getBoundingClientRect();
            const top = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2);
            return [[b.left, b.top, b.right, b.bottom], [innerWidth, innerHeight], el.contains(top)];""", element_id)
        assert 0 <= box[0] and box[2] <= inner[0] and 0 <= box[1] and box[3] <= inner[1], (element_id, box, inner)
        assert hit, f"#{element_id} is covered"

    def no_console_errors(self) -> None:
        severe = [e for e in self.browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe


def answer_of(base: str, labeler: str, item: int) -> dict | None:
    """The answer the server has saved for (labeler, item)."""
    with urllib.request.urlopen(f"{base}/api/item/{item}?labeler={labeler}", timeout=10) as res:
        return json.loads(res.read())["answer"]


def ranks_for(page: Page, typed: str) -> list[int]:
    """The ranks (per response index) that typing the card numbers ``typed`` (best first) gives."""
    k = page.js("return document.querySelectorAll('#ranking > li').length")
    by_label = {page.label_of(r): r for r in range(k)}
    ranks = [0] * k
    for rank, label in enumerate(typed, 1):
        ranks[by_label[label]] = rank
    return ranks


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("label_page")
    browser = chromium_browser(tmp / "chrome")
    plain = LabelStore(write_jsonl(tmp / "short.jsonl", SHORT), tmp / "short-rankings.jsonl")
    model = LabelStore(write_jsonl(tmp / "long.jsonl", [LONG_ITEM, SHORT[0]]), tmp / "long-rankings.jsonl")
    with contextlib.ExitStack() as stack:
        stack.callback(browser.quit)
        plain_url, _ = stack.enter_context(serving(create_app(plain, default_labeler="alice")))
        model_url, _ = stack.enter_context(serving(create_app(model, default_labeler="alice",
                                                              reward_model=LengthModel())))
        yield Page(browser, plain_url, model_url)


# ----------------------------------------------------------------------------- the keyboard


def test_keys_never_carry_an_action_into_the_next_prompt(page):
    """F, a note, Enter flags this prompt only; `2134` Enter on the next one ranks it (it used to flag it,
    note "2134", because the focus stayed in the note box)."""
    from selenium.webdriver.common.keys import Keys

    page.viewport(1280)
    page.open(f"{page.plain}/?labeler=fay")
    page.keys("f")
    assert page.js("return document.activeElement.id") == "flag-note"
    page.keys("off topic", Keys.ENTER)
    page.ready(1)
    flagged = answer_of(page.plain, "fay", 0)
    assert flagged["action"] == "flag" and flagged["note"] == "off topic" and not flagged.get("ranks"), flagged
    assert page.js("return document.activeElement === document.body && !document.getElementById('flag-note').value")
    expected = ranks_for(page, "2134")
    page.keys("2134", Keys.ENTER)
    page.ready(2)
    saved = answer_of(page.plain, "fay", 1)
    assert saved["ranks"] == expected and saved.get("action", "rank") == "rank", saved


def test_enter_on_a_focused_button_presses_that_button(page):
    """Tab to *Start over* + Enter starts over; Tab to *Skip* + Enter skips (it used to save a ranking)."""
    from selenium.webdriver.common.keys import Keys

    def tab_to(element_id: str):
        for _ in range(40):
            page.keys(Keys.TAB)
            if page.js("return document.activeElement.id") == element_id:
                return
        raise AssertionError(f"Tab never reached #{element_id}")

    page.viewport(1280)
    page.open(f"{page.plain}/?labeler=gus")
    page.keys("21")
    tab_to("reset")
    page.keys(Keys.ENTER)
    assert page.js("return document.getElementById('save').disabled")  # started over, nothing saved
    assert answer_of(page.plain, "gus", 0) is None and page.js("return document.body.dataset.item") == "0"
    page.keys("21")
    tab_to("skip")
    page.keys(Keys.ENTER)
    page.ready(1)
    saved = answer_of(page.plain, "gus", 0)
    assert saved["action"] == "skip" and not saved.get("ranks"), saved
    page.no_console_errors()


def test_skipped_prompts_are_counted_apart_and_can_be_revisited(page):
    from selenium.webdriver.common.keys import Keys

    from selenium.webdriver.support.ui import WebDriverWait

    assert post(f"{page.plain}/api/answer", {"labeler": "ian", "item": 1, "action": "rank",
                                             "ranks": [4, 3, 2, 1]})[0] == 200  # a second labeler on prompt 1
    page.viewport(1280)
    page.open(f"{page.plain}/?labeler=hal")
    page.keys("s")
    for item in range(1, 5):
        page.ready(item)
        page.keys("1234", Keys.ENTER)
    page.ready(None)  # every other prompt answered: the skipped one is not offered in a loop
    assert page.text("#progress-text") == "4 / 5 answered · 1 skipped"
    assert page.js("return document.getElementById('progress-fill').style.width") == "80%"  # skips are not done
    assert "1 skipped" in page.text("#done-title") and page.text("#done-revisit") == "Revisit skipped (1)"
    page.browser.find_element("id", "done-revisit").click()
    page.ready(0)
    assert "skipped this prompt before" in page.text("#answered-note")
    page.keys("4321", Keys.ENTER)
    page.ready(None)
    assert page.text("#progress-text") == "5 / 5 answered" and page.text("#done-title") == "All prompts answered"
    assert page.js("return document.getElementById('done-revisit').hidden")
    assert answer_of(page.plain, "hal", 0)["ranks"] is not None
    # the done page says how far the labelers agree, as /api/agreement does
    with urllib.request.urlopen(f"{page.plain}/api/agreement") as reply:
        between = json.load(reply)["between"]
    assert between["items"] >= 1  # ian ranked prompt 1 too
    WebDriverWait(page.browser, 10, poll_frequency=0.05).until(lambda b: page.text("#done-agreement"))
    assert page.text("#done-agreement").startswith(f"Labelers agree on the {between['items']} prompts")
    assert f"τ {between['tau']:.2f}" in page.text("#done-agreement")


def test_the_labelers_name_is_remembered_and_the_address_wins(page):
    """`/?labeler=carol`, two answers, the tab closed, the printed address (no query) reopened: still carol, at
    her third prompt (it used to say the server's default, "alice")."""
    from selenium.webdriver.common.keys import Keys

    browser = page.browser
    page.viewport(1280)
    page.open(f"{page.plain}/?labeler=carol")
    for item in range(2):
        page.keys("1234", Keys.ENTER)
        page.ready(item + 1)
    old = browser.current_window_handle
    browser.switch_to.new_window("tab")
    new = browser.current_window_handle
    browser.switch_to.window(old)
    browser.close()
    browser.switch_to.window(new)
    page.open(f"{page.plain}/", item=2)
    assert page.js("return document.getElementById('labeler').value") == "carol"
    assert page.text("#progress-text") == "2 / 5 answered"
    page.open(f"{page.plain}/?labeler=dave", item=0)  # the address wins over the remembered name ...
    assert page.js("return document.getElementById('labeler').value") == "dave"
    page.open(f"{page.plain}/", item=0)  # ... and is remembered in its place
    assert page.js("return document.getElementById('labeler').value") == "dave"


# ----------------------------------------------------------------------------- long responses, any width


def test_the_page_fits_400_and_1280_pixels(page):
    for width in (400, 1280):
        page.viewport(width)
        page.open(f"{page.model}/?labeler=w{width}")
        page.fits()
        right = page.js("return Math.max(...[...document.querySelectorAll('header *')].map("
                        "e => e.getBoundingClientRect().right))")
        assert right <= width, f"the header runs to {right} px in a {width} px window"
        widths = page.js("return [...document.querySelectorAll('#ranking .text')].map("
                         "e => e.getBoundingClientRect().width)")
        # responses get the card's width (stacked under their number on a narrow screen), not ~75 px
        assert min(widths) >= (0.8 * width if width < 600 else 500), (width, widths)
        page.on_screen("save")


def test_an_unbroken_token_never_widens_the_page(page):
    """A 1,500-character token in a response, in a code block, and in the reward model's feedback."""
    from selenium.webdriver.common.keys import Keys

    page.viewport(1280)
    page.open(f"{page.model}/?labeler=tok")
    page.fits()
    code = page.js("""const pre = document.querySelector('#ranking li[data-index="4"] pre');
                      return [pre.scrollWidth, pre.clientWidth, pre.getBoundingClientRect().right]""")
    assert code[0] > 2 * code[1] and code[2] <= 1280  # the code block scrolls inside itself
    page.keys("12345", Keys.ENTER)
    page.ready(0, mode="feedback")
    assert TOKEN[:200] in page.text("#model-order")
    for width in (1280, 400):
        page.viewport(width)
        page.fits()
        page.on_screen("next")


def test_long_responses_collapse_and_the_actions_stay_on_screen(page):
    page.viewport(1280)
    page.open(f"{page.model}/?labeler=long")
    shown, full = page.js("const t = document.querySelector('#ranking li[data-index=\"2\"] .text');"
                          "return [t.clientHeight, t.scrollHeight]")
    assert shown < 400 < 3 * shown < full  # the first lines, not all 6,300 characters
    page.on_screen("save")
    more = page.browser.find_element("css selector", '#ranking li[data-index="2"] button.more')
    page.js("arguments[0].scrollIntoView({block: 'center'})", more)
    more.click()
    assert page.js("return document.querySelector('#ranking li[data-index=\"2\"] .text').clientHeight") >= full - 2
    assert page.text('#ranking li[data-index="2"] button.more') == "show less"
    for width in (1280, 400):
        page.viewport(width)
        page.js("""const b = document.querySelector('#ranking li[data-index="2"]').getBoundingClientRect();
                   window.scrollTo(0, scrollY + b.top + b.height / 2 - innerHeight / 2);""")
        assert page.js("return scrollY") > 500  # well inside the long response
        for element_id in ("save", "skip", "flag"):
            page.on_screen(element_id)
        page.fits()


def test_markdown_is_rendered_and_html_stays_text(page):
    page.viewport(1280)
    page.open(f"{page.model}/?labeler=md")
    card = '#ranking li[data-index="0"] .text'
    got = page.js("""const t = document.querySelector(arguments[0]), all = (s) => [...t.querySelectorAll(s)];
        return {h: all('h4').map(e => e.textContent), ul: all('ul > li').length, ol: all('ol > li').length,
                strong: all('strong').map(e => e.textContent), em: all('em').map(e => e.textContent),
                code: all(':not(pre) > code').map(e => e.textContent), pre: all('pre code').map(e => e.textContent),
                html: document.querySelectorAll('#ranking script, #ranking img, #ranking b').length,
                text: t.textContent, pwned: typeof window.__pwned};""", card)
    assert got["h"] == ["Boiling an egg"] and got["ul"] == 2 and got["ol"] == 2
    assert got["strong"] == ["two"] and got["em"] == ["three"] and got["code"] == ["x = 1"]
    assert got["pre"] == ["print('<b>hi</b>')"]
    assert got["html"] == 0 and got["pwned"] == "undefined"  # escaped exactly as text
    assert '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> <b>not bold</b>' in got["text"]
    page.no_console_errors()


def test_a_response_cut_at_the_token_limit_has_a_badge(page):
    """Rows from `rewardlab generate` carry `truncated`; /api/item passes it on in `extra`; the page marks them."""
    page.viewport(1280)
    page.open(f"{page.model}/?labeler=cut")
    badges = page.js("return [...document.querySelectorAll('#ranking > li')].map(li => "
                     "[Number(li.dataset.index), li.querySelector('.badge.cut')?.textContent || null])")
    assert dict(badges) == {0: None, 1: None, 2: "cut at the token limit", 3: None, 4: None}
