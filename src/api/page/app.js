// vigil's page: cameras every 2 s (a tile with the latest frame, and a table), plates read
// (searched by prefix and time, refreshed as new reads arrive), events live over SSE (replaying
// from the last id seen). Clicking an event or a plate opens it (#event/ID) with its boxes drawn
// on the snapshot.
// The token arrives once as /?access_token=…; it is kept for this tab and taken out of the
// address bar, so it stays out of the history and of links copied from the page.
const params = new URLSearchParams(location.search);
if (params.has("access_token")) {
  sessionStorage.setItem("vigil-token", params.get("access_token"));
  params.delete("access_token");
  history.replaceState(null, "", location.pathname + (params.size ? "?" + params : "") + location.hash);
}
const token = sessionStorage.getItem("vigil-token");
// fetch sends the token as a header; only EventSource and <img>, which cannot, put it in the URL.
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : url);
const api = (url, init = {}) =>
  fetch(url, { ...init, headers: { ...(init.headers || {}), ...(token ? { Authorization: "Bearer " + token } : {}) } });
const $ = (sel) => document.querySelector(sel);
const filters = $("#filters");
let source = null;
let lastId = 0;

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function summary(ev) {
  const d = ev.event_data || {};
  switch (ev.event_type) {
    case "motion": return `motion ${d.phase} · ${(100 * (d.area || 0)).toFixed(1)} % of frame`;
    case "tracking": return `${d.label} #${d.track_no ?? d.track_id} ${d.phase}${d.zones && d.zones.length ? " in " + d.zones.join(", ") : ""}`;
    case "anpr": return `plate ${d.phase || ""}`;
    case "camera": return `camera ${d.state}${d.reason ? " (" + d.reason + ")" : ""}`;
    default: return ev.event_type;
  }
}

function addEvent(ev) {
  if (ev.id <= lastId) return;
  lastId = ev.id;
  const li = document.createElement("li");
  li.className = "event " + ev.event_type;
  li.dataset.id = ev.id;
  if (ev.snapshot_path) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = "snapshot " + ev.id;
    img.src = withToken(`/api/events/${ev.id}/snapshot`);
    li.append(img);
  }
  const body = document.createElement("div");
  body.append(text("div", summary(ev)));
  if (ev.event_type === "anpr" && ev.event_data.plate) body.append(text("span", ev.event_data.plate, "plate"));
  body.append(text("div", `#${ev.id} · ${ev.camera_id} · ${ev.timestamp}`, "meta"));
  li.append(body);
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

function query() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(filters)) if (v) q.set(k, v);
  return q;
}

async function reload() {
  if (source) source.close();
  $("#events").replaceChildren();
  lastId = 0;
  const q = query();
  q.set("limit", "50");
  const res = await api("/api/events?" + q);
  const page = await res.json();
  (page.events || []).reverse().forEach(addEvent);
  const live = query();
  live.set("after_id", String(lastId));
  source = new EventSource(withToken("/api/events/stream?" + live));
  source.onopen = () => { $("#live").textContent = "live"; $("#live").className = "pill ok"; };
  source.onerror = () => { $("#live").textContent = "reconnecting…"; $("#live").className = "pill"; };
  source.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    addEvent(ev);
    if (ev.event_type === "anpr") platesSoon();
  };
}

async function cameras() {
  try {
    const list = await (await api("/api/cameras")).json();
    // The last error is shown while it matters: once a camera streams again it is history (the
    // API still reports it).
    const rows = list.map((c) => {
      const tr = document.createElement("tr");
      const ms = (v) => (v == null ? "–" : v.toFixed(1));
      [c.id, c.state, c.decode_fps.toFixed(1), c.analysed_fps.toFixed(1), c.detect_fps.toFixed(1), c.frames_dropped, c.queue_depth,
        `${ms(c.inference_ms.p50)} / ${ms(c.inference_ms.p95)} ms`, c.state === "streaming" ? "" : c.last_error || ""].forEach((v, i) =>
        tr.append(text("td", String(v), i === 1 ? "state-" + c.state : "")));
      const remove = text("button", "remove");
      remove.onclick = () => change("DELETE", `/api/cameras/${encodeURIComponent(c.id)}`);
      const cell = document.createElement("td");
      cell.append(remove);
      tr.append(cell);
      return tr;
    });
    $("#cameras tbody").replaceChildren(...rows);
    tiles(list);
    const select = filters.elements.camera;
    for (const c of list) {
      if (![...select.options].some((o) => o.value === c.id)) select.append(new Option(c.id, c.id));
    }
  } catch (e) { /* the next poll retries */ }
}

// One tile per camera with its latest frame, refreshed after the previous image has loaded, so
// a slow link never piles up requests. Only streaming cameras are asked for frames.
function tiles(list) {
  const box = $("#tiles");
  const keep = new Set(list.map((c) => c.id));
  for (const el of [...box.children]) if (!keep.has(el.dataset.id)) el.remove();
  for (const c of list) {
    let tile = [...box.children].find((el) => el.dataset.id === c.id);
    if (!tile) {
      tile = document.createElement("figure");
      tile.className = "tile";
      tile.dataset.id = c.id;
      const img = document.createElement("img");
      img.alt = "latest frame of " + c.id;
      img.onload = img.onerror = () => { delete img.dataset.loading; };
      const caption = document.createElement("figcaption");
      caption.append(text("span", c.id), text("span", ""));
      tile.append(img, caption);
      box.append(tile);
    }
    const [img, caption] = tile.children;
    caption.lastChild.textContent = c.state;
    caption.lastChild.className = "state-" + c.state;
    if (c.state === "streaming" && !img.dataset.loading) {
      img.dataset.loading = "1";
      img.src = withToken(`/api/cameras/${encodeURIComponent(c.id)}/frame?t=${Date.now()}`);
    }
  }
}

// The event view: the snapshot with the event's boxes drawn in the frame's own pixels (the SVG
// takes the image's natural size as its viewBox), and the event's fields.
const view = $("#event-view");
const svgNs = "http://www.w3.org/2000/svg";

function boxes(ev) {
  const d = ev.event_data || {};
  const out = [];
  const add = (b, cls, label) => { if (Array.isArray(b) && b.length === 4) out.push({ b, cls, label }); };
  switch (ev.event_type) {
    case "tracking": add(d.box, "object", `${d.label} #${d.track_no ?? d.track_id}`); break;
    case "anpr": add(d.vehicle_box, "object", ""); add(d.plate_box, "plate", d.plate); break;
    case "motion": (d.regions || []).forEach((r) => add(r, "motion", "")); break;
  }
  return out;
}

function draw(ev, img) {
  const svg = view.querySelector("svg");
  const [w, h] = [img.naturalWidth, img.naturalHeight];
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const font = Math.max(12, Math.round(w / 60));
  svg.replaceChildren(...boxes(ev).flatMap(({ b: [x1, y1, x2, y2], cls, label }) => {
    const rect = document.createElementNS(svgNs, "rect");
    Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: cls }).forEach(([k, v]) => rect.setAttribute(k, v));
    if (!label) return [rect];
    const caption = document.createElementNS(svgNs, "text");
    caption.setAttribute("x", x1);
    caption.setAttribute("y", Math.max(font, y1 - font / 3));
    caption.setAttribute("font-size", font);
    caption.textContent = label;
    return [rect, caption];
  }));
}

async function openEvent(id) {
  try {
    const res = await api(`/api/events/${id}`);
    if (!res.ok) return;
    const ev = await res.json();
    const d = ev.event_data || {};
    view.querySelector("h2").textContent = `${summary(ev)} · ${ev.camera_id}`;
    const img = view.querySelector("img");
    view.querySelector("svg").replaceChildren();
    img.onload = () => draw(ev, img);
    img.hidden = !ev.snapshot_path;
    img.src = ev.snapshot_path ? withToken(`/api/events/${ev.id}/snapshot`) : "";
    const fields = [["event", `#${ev.id}` + (ev.revision ? ` (revision ${ev.revision})` : "")], ["type", ev.event_type],
      ["camera", ev.camera_id], ["time", new Date(ev.timestamp).toLocaleString()], ["label", d.label], ["plate", d.plate],
      ["confidence", d.confidence == null ? null : (100 * d.confidence).toFixed(0) + " %"], ["reads", d.reads],
      ["zones", d.zones && d.zones.join(", ")], ["known", d.known && d.known.name]];
    view.querySelector("dl").replaceChildren(...fields.filter(([, v]) => v != null && v !== "")
      .flatMap(([k, v]) => [text("dt", k), text("dd", String(v))]));
    if (!view.open) view.showModal();
  } catch (e) { /* the event stays closed */ }
}

function route() {
  const m = location.hash.match(/^#event\/(\d+)$/);
  if (m) openEvent(m[1]);
  else if (view.open) view.close();
}

view.querySelector(".close").onclick = () => view.close();
view.addEventListener("close", () => { if (location.hash) history.replaceState(null, "", location.pathname + location.search); });
window.addEventListener("hashchange", route);
const showOnClick = (list, selector) => list.addEventListener("click", (e) => {
  const el = e.target.closest(selector);
  if (el && el.dataset.id) location.hash = `#event/${el.dataset.id}`;
});

// Plates: the latest 50 `anpr` events that match the search, newest first. A plate read that
// improves keeps its event id (a new revision), so the table is reloaded rather than appended to.
const plateSearch = $("#plates-search");
let platesDue = null;

async function plates() {
  const q = new URLSearchParams({ type: "anpr", limit: "50" });
  const f = new FormData(plateSearch);
  const prefix = String(f.get("plate") || "").toUpperCase().replace(/[^A-Z0-9]/g, "");
  if (prefix) q.set("plate", prefix + "*");
  for (const k of ["since", "until"]) if (f.get(k)) q.set(k, new Date(f.get(k)).toISOString());
  try {
    const page = await (await api("/api/events?" + q)).json();
    const rows = (page.events || []).map((ev) => {
      const d = ev.event_data || {};
      const tr = document.createElement("tr");
      tr.dataset.id = ev.id;
      const crop = document.createElement("td");
      if (d.crop_path) {
        const img = document.createElement("img");
        img.alt = "plate " + d.plate;
        img.src = withToken(`/api/events/${ev.id}/crop`);
        crop.append(img);
      }
      const plate = text("td", "");
      plate.append(text("span", d.plate, "plate"));
      if (d.known) plate.append(text("span", d.known.name, "known"));
      tr.append(crop, plate, text("td", (100 * (d.confidence || 0)).toFixed(0) + " %"), text("td", String(d.reads ?? "")),
        text("td", ev.camera_id), text("td", new Date(ev.timestamp).toLocaleString()));
      return tr;
    });
    $("#plates tbody").replaceChildren(...rows);
  } catch (e) { /* the next change retries */ }
}

function platesSoon() {
  clearTimeout(platesDue);
  platesDue = setTimeout(plates, 300);
}

plateSearch.addEventListener("input", platesSoon);
plateSearch.addEventListener("submit", (e) => { e.preventDefault(); plates(); });
// Adding and removing cameras: the API's answer, an error included (a camera from the config
// file cannot be removed here), shows beside the form.
async function change(method, url, body) {
  const init = { method };
  if (body) Object.assign(init, { headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const res = await api(url, init);
  $("#camera-error").textContent = res.ok ? "" : (await res.json()).error || res.statusText;
  cameras();
  return res.ok;
}

$("#add-camera").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  if (await change("POST", "/api/cameras", { camera_id: f.get("camera_id"), stream_url: f.get("stream_url") })) e.target.reset();
});
filters.addEventListener("change", reload);
showOnClick($("#events"), "li.event");
showOnClick($("#plates"), "tbody tr");
route();
cameras();
setInterval(cameras, 2000);
reload();
plates();
// Reads that arrive while the events list is filtered to another type still show up.
setInterval(plates, 10000);
