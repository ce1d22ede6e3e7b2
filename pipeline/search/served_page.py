"""The page ``mote serve`` shows at ``/``: a query box and a grid of hits, each with the frame
that matched, its score, label and moment; a click plays the video from that moment.

One self-contained document: inline CSS and script, no CDN, every request to the same server
(``/api/health``, ``/api/search``, the thumbnails and the video files).
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mote search</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #f6f6f7; }
header { background: #fff; border-bottom: 1px solid #e2e2e2; padding: 14px 24px; }
h1 { font-size: 18px; margin: 0 8px 0 0; display: inline; }
#facts { color: #666; }
form { margin: 10px 0 0; display: flex; gap: 8px; }
#q { flex: 1; max-width: 640px; font-size: 16px; padding: 7px 10px; border: 1px solid #bbb;
  border-radius: 6px; }
#k { width: 64px; padding: 6px; border: 1px solid #bbb; border-radius: 6px; }
button { font-size: 15px; padding: 7px 16px; border: 0; border-radius: 6px; background: #2456d6;
  color: #fff; cursor: pointer; }
#status { padding: 10px 24px 0; color: #555; min-height: 20px; }
#status.error { color: #b00020; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 14px;
  padding: 12px 24px 24px; }
.hit { background: #fff; border: 1px solid #e3e3e3; border-radius: 8px; overflow: hidden;
  cursor: pointer; }
.hit:hover { border-color: #2456d6; }
.hit img { width: 100%; aspect-ratio: 4 / 3; object-fit: cover; background: #222; display: block; }
.facts { padding: 8px 10px; }
.rank { font-weight: 600; }
.score { float: right; font-variant-numeric: tabular-nums; color: #0a6; }
.label { display: inline-block; background: #eef; border-radius: 3px; padding: 0 5px;
  margin: 4px 0; }
.id { font: 12px ui-monospace, monospace; color: #444; word-break: break-all; }
.moment { color: #555; font-size: 12px; }
#player { position: fixed; inset: 0; background: rgba(0, 0, 0, .75); display: none;
  align-items: center; justify-content: center; }
#player.open { display: flex; }
#player video { max-width: 90vw; max-height: 80vh; background: #000; }
#player p { color: #fff; text-align: center; }
</style></head><body>
<header><h1>mote search</h1><span id="facts"></span>
<form id="search"><input id="q" name="q" placeholder="Describe what happens, e.g. a dog surfing"
 autocomplete="off" autofocus><input id="k" name="k" type="number" min="1" max="1000" value="12"
 aria-label="hits"><button type="submit">Search</button></form></header>
<div id="status"></div>
<div id="grid"></div>
<div id="player"><div><video id="video" controls preload="metadata"></video>
<p id="playing"></p></div></div>
<script>
const $ = (id) => document.getElementById(id);
const videoUrl = (id) => "/api/videos/" + id.split("/").map(encodeURIComponent).join("/");
function text(tag, cls, value) {
  const el = document.createElement(tag); el.className = cls; el.textContent = value; return el;
}
async function facts() {
  const health = await (await fetch("/api/health")).json();
  $("facts").textContent = health.videos + " videos, " + health.variant +
    (health.run ? ", run " + health.run : "") + ", " + health.device;
}
function card(hit) {
  const el = document.createElement("div");
  el.className = "hit"; el.dataset.videoId = hit.video_id; el.dataset.rank = hit.rank;
  el.dataset.score = hit.score;
  const img = document.createElement("img");
  img.loading = "lazy"; img.alt = hit.video_id;
  img.src = videoUrl(hit.video_id) + "/frames/" + (hit.frame ?? 0) + ".jpg";
  el.appendChild(img);
  const box = document.createElement("div"); box.className = "facts";
  box.appendChild(text("span", "rank", "#" + hit.rank));
  box.appendChild(text("span", "score", hit.score.toFixed(4)));
  box.appendChild(document.createElement("br"));
  if (hit.label) box.appendChild(text("span", "label", hit.label));
  box.appendChild(text("div", "id", hit.video_id));
  if (hit.time_s !== null && hit.time_s !== undefined)
    box.appendChild(text("div", "moment", "best match at " + hit.time_s.toFixed(2) + " s"));
  el.appendChild(box);
  el.addEventListener("click", () => play(hit));
  return el;
}
function play(hit) {
  const video = $("video");
  const start = hit.time_s || 0;
  video.dataset.start = start;
  video.src = videoUrl(hit.video_id) + "/file";
  video.onloadedmetadata = () => { video.currentTime = start; video.play().catch(() => {}); };
  $("playing").textContent = hit.video_id + " from " + start.toFixed(2) + " s";
  $("player").classList.add("open");
}
$("player").addEventListener("click", (event) => {
  if (event.target.id === "player") { $("video").pause(); $("player").classList.remove("open"); }
});
$("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("q").value.trim();
  if (!query) return;
  const status = $("status");
  status.className = ""; status.textContent = "searching...";
  const response = await fetch("/api/search", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({query: query, k: parseInt($("k").value || "12", 10)})});
  const answer = await response.json();
  const grid = $("grid");
  grid.replaceChildren();
  if (!response.ok) { status.className = "error"; status.textContent = answer.error; return; }
  status.textContent = answer.hits.length + " videos for \\u201c" + query + "\\u201d in " +
    answer.took_ms.toFixed(1) + " ms";
  answer.hits.forEach((hit) => grid.appendChild(card(hit)));
  grid.dataset.query = query;
});
facts();
</script></body></html>
"""
