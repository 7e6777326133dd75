"""Look at the slide decks as a student in the room would: every slide in headless Chromium, offline.

    python -m course_utils.publish slides --out build/slides
    python benchmarks/slide_check.py build/slides [--shots build/slide-shots]   # about 1 min per deck

Needs Debian's chromium (``apt-get install chromium``) and the ``playwright`` package from PyPI (its
browser download is not needed: it drives /usr/bin/chromium). All network requests are blocked, so a
deck that still fetches anything from the web fails. For every slide it records:

* whether its content is taller than the slide (the decks' 1280 x 800 reveal.js canvas): such a slide scrolls;
* whether MathJax left any formula unrendered (raw ``$...$`` text in Markdown, a processing error, or a TeX
  error, which MathJax 2 shows as red text);
* the smallest figure on it, in screen pixels at a 1280 x 800 window.

and writes a screenshot of each slide with ``--shots``. Prints one line per deck and the overflowing
slides, and writes ``data/results/slide_check.json``.
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from course_utils import REPO_ROOT  # noqa: E402

MEASURE = """() => {
  const s = Reveal.getCurrentSlide();
  const h = Reveal.getConfig().height;
  const imgs = Array.from(s.querySelectorAll('img')).map(i => i.getBoundingClientRect().height).filter(x => x > 0);
  const text = Array.from(s.querySelectorAll('.jp-RenderedMarkdown')).map(e => e.innerText).join('\\n');
  return {overflow: Math.max(0, s.scrollHeight - h), raw_math: (text.match(/\\$[^$\\n]+\\$/g) || []).length,
          math_errors: (s.innerText.match(/Math Processing Error/g) || []).length
                       + s.querySelectorAll('.MathJax_Error, merror, .merror, [style*="color: red"]').length,
          min_img: imgs.length ? Math.min(...imgs) : null,
          heading: (s.querySelector('h1,h2,h3') || {}).innerText || ''};
}"""


def check_deck(page, path, shots):
    page.goto("file://" + os.path.abspath(path))
    page.wait_for_function("window.Reveal && Reveal.isReady()")
    page.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0"
                           " && !MathJax.Hub.queue.running",
                           timeout=120_000)
    slides = page.evaluate("Reveal.getSlides().map(s => Reveal.getIndices(s))")
    rows = []
    for k, idx in enumerate(slides):
        page.evaluate(f"Reveal.slide({idx['h']}, {idx.get('v') or 0})")
        page.wait_for_timeout(100)  # then let MathJax finish re-rendering the slide's formulas
        page.wait_for_function("MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running", timeout=60_000)
        page.wait_for_timeout(100)
        row = page.evaluate(MEASURE)
        row.update(h=idx["h"], v=idx.get("v") or 0)
        rows.append(row)
        if shots:
            name = os.path.basename(path).split(".")[0]
            page.screenshot(path=os.path.join(shots, f"{name}_{k:03d}_{row['h']}_{row['v']}.png"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("decks")
    parser.add_argument("--shots", default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if args.shots:
        os.makedirs(args.shots, exist_ok=True)
    report = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        fetched = []
        page.route("http*://**", lambda route: (fetched.append(route.request.url), route.abort()))
        for path in sorted(glob.glob(os.path.join(args.decks, "*.slides.html"))):
            rows = check_deck(page, path, args.shots)
            name = os.path.basename(path)
            over = [r for r in rows if r["overflow"] > 0]
            report[name] = dict(slides=len(rows), overflowing=len(over), raw_math=sum(r["raw_math"] for r in rows),
                                math_errors=sum(r["math_errors"] for r in rows),
                                smallest_figure_px=min((r["min_img"] for r in rows if r["min_img"]), default=None),
                                rows=rows)
            print(f"{name}: {len(rows)} slides, {len(over)} taller than the slide (they scroll), "
                  f"unrendered formulas {report[name]['raw_math']}, MathJax errors {report[name]['math_errors']}")
            for r in over:
                print(f"   slide {r['h']}.{r['v']} '{r['heading'][:50]}' +{r['overflow']:.0f} px")
        browser.close()
    print("requests to the network:", len(fetched), fetched[:5])
    out = os.path.join(REPO_ROOT, "data", "results", "slide_check.json")
    with open(out, "w") as fh:
        json.dump(dict(command="python benchmarks/slide_check.py build/slides", network_requests=len(fetched),
                       decks={k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in report.items()}),
                  fh, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
