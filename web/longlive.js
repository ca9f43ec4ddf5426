// LongLive: watch the video grow on the running sampler node, and steer it live (docs/live.md).
//
// Every `longlive.chunk` message names a short mp4 of one finished chunk in ComfyUI's temp folder.
// The node gets a panel (a DOM widget, never saved with the workflow) whose player plays the chunks
// one after another as they arrive; once the run ends it loops over the whole video. Two <video>
// elements take turns: the next clip loads in the hidden one while the shown one plays, so the
// player never flashes black between chunks. While a steerable node runs (LongLive Sampler or
// Sampler -> Video with its clip input connected), from its first chunk on, the panel has a text
// box and a button that POST /longlive/steer, and a Hold button (POST /longlive/hold) that stops the
// run at the next chunk boundary while the user types (Steer, Resume or the timeout end it). The
// `longlive.steer` and `longlive.hold` messages say what took effect at which frame (a text sent
// from here may have been replaced by a later one, or dropped) and when the run is held; after the
// run the panel shows the steering record the node reported (the JSON that "LongLive Schedule from
// Steering" takes).
//
// Everything this needs from the editor is looked up first (window.comfyAPI's app and api,
// registerExtension, addEventListener, apiURL, fetchApi; addDOMWidget on the node); where one is
// missing the extension does nothing, and no handler lets an exception reach the editor.

const comfy = window.comfyAPI;
const app = comfy?.app?.app;
const api = comfy?.api?.api;

const PREVIEWING = new Set(["LongLiveSampler", "LongLiveSampleToVideo", "LongLiveContinue"]);
const STEERABLE = new Set(["LongLiveSampler", "LongLiveSampleToVideo"]);
// nodes whose output the editor shows in a player of its own, its "video-preview" widget
const VIDEO_OUTPUT = new Set(["LongLiveSaveVideo", "LongLiveSampleToVideo"]);
const EDITOR_VIDEO_WIDGET = "video-preview";
const MAX_STEER_CHARS = 2000; // the server refuses longer texts (nodes/live.py)
const HOLD_SECONDS = 60; // a hold from the panel resumes by itself after this (the server's default)
const PANEL_HEIGHT = 260; // scripts/make_workflows.py reserves this height on the samplers of the templates

const panels = new Map(); // node id (string) -> panel
let runningPromptId = null;
let runningNodeId = null;
let warned = false;

function safely(handler) {
  return (...args) => {
    try {
      handler(...args);
    } catch (error) {
      if (!warned) {
        warned = true;
        console.warn("[LongLive] live preview: an error, caught (later ones are not shown):", error);
      }
    }
  };
}

function nodeById(id) {
  const graph = app.rootGraph ?? app.graph; // message node ids are the queued prompt's: the root graph's
  if (!graph || typeof graph.getNodeById !== "function") return null;
  return graph.getNodeById(Number(id)) ?? graph.getNodeById(id) ?? null;
}

function isSteerable(node) {
  const clip = (node.inputs || []).find((input) => input.name === "clip");
  return STEERABLE.has(node.type) && clip != null && clip.link != null;
}

function element(tag, style = {}, text = "") {
  const el = document.createElement(tag);
  Object.assign(el.style, style);
  if (text) el.textContent = text;
  return el;
}

function makePanel(node) {
  if (typeof node.addDOMWidget !== "function") return null;
  const root = element("div", {
    display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
    boxSizing: "border-box", fontSize: "12px", color: "var(--input-text, #ddd)",
  });
  root.className = "longlive-live";
  const screen = element("div", { flex: "1 1 auto", minHeight: "0", position: "relative" });
  const players = [0, 1].map((n) => {
    const video = element("video", {
      position: "absolute", inset: "0", width: "100%", height: "100%", objectFit: "contain", background: "#000",
      borderRadius: "4px", imageRendering: "pixelated", visibility: n === 0 ? "visible" : "hidden",
    });
    video.muted = true;
    video.playsInline = true;
    video.preload = "auto";
    video.className = "longlive-live-video";
    screen.append(video);
    return video;
  });
  const status = element("div", { opacity: "0.8" }, "waiting for the first chunk…");
  status.className = "longlive-live-status";

  const steerRow = element("div", { display: "none", gap: "4px" });
  steerRow.className = "longlive-steer";
  const input = element("input", {
    flex: "1 1 auto", minWidth: "0", padding: "3px 6px", borderRadius: "4px",
    border: "1px solid var(--border-color, #555)", background: "var(--comfy-input-bg, #222)",
    color: "var(--input-text, #ddd)",
  });
  input.type = "text";
  input.maxLength = MAX_STEER_CHARS;
  input.placeholder = "What happens next…";
  input.className = "longlive-steer-text";
  const button = element("button", { padding: "3px 10px", borderRadius: "4px", cursor: "pointer" }, "Steer");
  button.className = "longlive-steer-button";
  const holdButton = element("button", { padding: "3px 10px", borderRadius: "4px", cursor: "pointer" }, "Hold");
  holdButton.className = "longlive-hold-button";
  holdButton.title = "Stop at the next chunk until you press Steer or Resume (or a minute passes)";
  steerRow.append(input, button, holdButton);
  const steerStatus = element("div", { opacity: "0.8", minHeight: "1em", maxHeight: "3.9em", overflow: "auto" });
  steerStatus.className = "longlive-steer-status";
  const record = element("pre", {
    display: "none", margin: "0", whiteSpace: "pre-wrap", wordBreak: "break-word", userSelect: "text",
    maxHeight: "5em", overflow: "auto", fontSize: "11px",
  });
  record.className = "longlive-steering-record";
  root.append(screen, status, steerRow, steerStatus, record);

  const panel = {
    node, root, players, front: 0, status, steerRow, input, button, holdButton, steerStatus, record,
    promptId: null, clips: [], index: -1, waiting: true, running: false, sent: null, holding: false,
  };
  const widget = node.addDOMWidget("longlive_live", "longlive_live", root, {
    serialize: false, hideOnZoom: false, getMinHeight: () => PANEL_HEIGHT, getHeight: () => PANEL_HEIGHT,
  });
  if (widget) widget.serialize = false; // not in the saved workflow, not in the queued prompt
  for (const name of ["keydown", "keyup", "keypress"]) {
    input.addEventListener(name, (event) => event.stopPropagation()); // typing is not a canvas shortcut
  }
  for (const player of players) {
    player.addEventListener("ended", safely(() => {
      if (player === panel.players[panel.front]) advance(panel);
    }));
  }
  button.addEventListener("click", safely(() => sendSteer(panel)));
  holdButton.addEventListener("click", safely(() => sendHold(panel, panel.holding)));
  input.addEventListener("keydown", safely((event) => {
    if (event.key === "Enter") sendSteer(panel);
  }));
  const width = Math.max(node.size?.[0] ?? 0, 320);
  if (typeof node.computeSize === "function" && typeof node.setSize === "function") {
    node.setSize([width, Math.max(node.size?.[1] ?? 0, node.computeSize([width, 0])[1])]);
  }
  (app.rootGraph ?? app.graph)?.setDirtyCanvas?.(true, true);
  return panel;
}

function panelFor(id, create) {
  const key = String(id);
  const existing = panels.get(key);
  const node = nodeById(key);
  if (existing && existing.node === node) return existing;
  if (!create || !node || !PREVIEWING.has(node.type)) return null;
  const panel = makePanel(node);
  if (panel) panels.set(key, panel);
  return panel;
}

function startRun(panel, promptId) {
  panel.promptId = promptId;
  panel.clips = [];
  panel.index = -1;
  panel.waiting = true;
  panel.running = true;
  for (const player of panel.players) {
    player.removeAttribute("src");
    delete player.dataset.clip;
  }
  panel.status.textContent = "waiting for the first chunk…";
  panel.steerStatus.textContent = "";
  panel.sent = null;
  setHolding(panel, false);
  panel.record.style.display = "none";
  panel.steerRow.style.display = "none"; // shown with the first chunk: by then the server takes steers
}

function endRun(panel) {
  panel.running = false;
  panel.steerRow.style.display = "none";
  setHolding(panel, false);
  if (panel.clips.length) {
    const last = panel.clips[panel.clips.length - 1];
    panel.status.textContent = `${panel.clips.length} chunks · ${last.end} frames`;
    if (panel.waiting) advance(panel); // the player was waiting at the end: loop the whole video
  }
}

function prepare(panel, index) {
  // load clip `index` into the hidden player
  const back = panel.players[1 - panel.front];
  if (back.dataset.clip !== String(index)) {
    back.dataset.clip = String(index);
    back.src = panel.clips[index].url;
    back.load();
  }
  return back;
}

function advance(panel) {
  // show the clip after the one shown (the first again once the run is over), as soon as it has loaded
  let target = panel.index + 1;
  if (target >= panel.clips.length) {
    if (panel.running || !panel.clips.length) {
      panel.waiting = true;
      return;
    }
    target = 0;
  }
  panel.waiting = false;
  const back = prepare(panel, target);
  if (back.readyState >= 2) show(panel, target);
  else {
    back.addEventListener("loadeddata", safely(() => {
      if (back.dataset.clip === String(target) && panel.index !== target) show(panel, target);
    }), { once: true });
  }
}

function show(panel, index) {
  const shown = panel.players[panel.front];
  const next = panel.players[1 - panel.front];
  next.style.visibility = "visible";
  shown.style.visibility = "hidden";
  shown.pause();
  panel.front = 1 - panel.front;
  panel.index = index;
  next.currentTime = 0;
  next.play()?.catch?.(() => {}); // autoplay may be refused; the first frame shows all the same
  const clip = panel.clips[index];
  const live = panel.running ? " (live)" : "";
  panel.status.textContent = `chunk ${clip.chunk}/${clip.chunks} · frames ${clip.first}–${clip.end - 1}${live}`;
  if (index + 1 < panel.clips.length) prepare(panel, index + 1);
}

function onChunk(data) {
  if (!data || typeof data.preview !== "object") return;
  const panel = panelFor(data.node, true);
  if (!panel) return;
  if (panel.promptId !== data.prompt_id) startRun(panel, data.prompt_id);
  const query = new URLSearchParams({
    filename: data.preview.filename, subfolder: data.preview.subfolder ?? "", type: data.preview.type ?? "temp",
  });
  panel.clips.push({
    url: api.apiURL(`/view?${query}`), chunk: data.chunk, chunks: data.chunks, first: data.first_frame,
    end: data.first_frame + data.frames,
  });
  if (panel.running && isSteerable(panel.node)) panel.steerRow.style.display = "flex";
  if (panel.waiting) advance(panel);
  else if (panel.clips.length - 1 === panel.index + 1) prepare(panel, panel.index + 1);
}

function onExecuting(detail) {
  const id = detail && typeof detail === "object" ? (detail.display_node ?? detail.node) : detail;
  if (runningNodeId != null && String(id) !== runningNodeId) {
    const previous = panels.get(runningNodeId);
    if (previous?.running) endRun(previous);
  }
  runningNodeId = id == null ? null : String(id);
  if (runningNodeId == null || runningPromptId == null) return;
  const node = nodeById(runningNodeId);
  if (!node || !PREVIEWING.has(node.type)) return;
  const panel = panelFor(runningNodeId, true);
  if (panel && panel.promptId !== runningPromptId) startRun(panel, runningPromptId);
}

function onExecutionEnd() {
  for (const panel of panels.values()) if (panel.running) endRun(panel);
  runningNodeId = null;
}

async function post(route, body) {
  // (HTTP status, JSON answer) of a POST to one of the pack's routes
  const response = await api.fetchApi(route, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  return [response.status, await response.json().catch(() => ({}))];
}

function requestBody(panel) {
  // the client id lets the server tell this editor what took effect even when another client queued the prompt
  return { prompt_id: panel.promptId, node: String(panel.node.id), ...(api.clientId ? { client_id: api.clientId } : {}) };
}

async function sendSteer(panel) {
  const text = panel.input.value;
  if (!text.trim() || !panel.running) return;
  panel.button.disabled = true;
  panel.steerStatus.textContent = "sending…";
  try {
    const [status, answer] = await post("/longlive/steer", { ...requestBody(panel), text });
    if (status === 200) {
      const frame = answer.takes_effect_at_frame;
      panel.sent = { text, frame };
      const replacing = answer.replaces_pending ? " (replacing the text sent before it)" : "";
      panel.steerStatus.textContent = `“${text}” takes over at frame ${frame}${replacing}`;
      panel.input.value = "";
    } else {
      panel.steerStatus.textContent = answer.error || `refused (HTTP ${status})`;
    }
  } catch (error) {
    panel.steerStatus.textContent = `not sent: ${error}`;
  } finally {
    panel.button.disabled = false;
  }
}

function setHolding(panel, holding) {
  panel.holding = holding;
  panel.holdButton.textContent = holding ? "Resume" : "Hold";
}

async function sendHold(panel, resume) {
  if (!panel.running) return;
  panel.holdButton.disabled = true;
  try {
    const [status, answer] = await post("/longlive/hold", { ...requestBody(panel), resume, timeout_s: HOLD_SECONDS });
    if (status !== 200) {
      panel.steerStatus.textContent = answer.error || `refused (HTTP ${status})`;
    } else if (resume) {
      setHolding(panel, false);
    } else {
      setHolding(panel, true);
      panel.steerStatus.textContent = `holding at frame ${answer.holds_at_frame}: type, then Steer or Resume`;
    }
  } catch (error) {
    panel.steerStatus.textContent = `not sent: ${error}`;
  } finally {
    panel.holdButton.disabled = false;
  }
}

function onSteer(data) {
  // a text applied or dropped at a chunk boundary: what the box says now, whoever sent it
  const panel = panels.get(String(data?.node));
  if (!panel || panel.promptId !== data.prompt_id) return;
  const mine = panel.sent && panel.sent.frame === data.frame ? panel.sent : null;
  panel.steerStatus.title = data.reason ?? "";
  if (data.status === "dropped") {
    // the reason's first sentence here, all of it in the tooltip
    const whose = mine && mine.text === data.text ? "" : " (sent elsewhere)";
    const reason = String(data.reason).split(/(?<=\.) /)[0];
    panel.steerStatus.textContent = `dropped at frame ${data.frame}: “${data.text}”${whose} could not be encoded ` +
      `(${reason}); the prompt stays as it was`;
  } else if (mine && mine.text !== data.text) {
    panel.steerStatus.textContent = `replaced: “${mine.text}” was replaced by a later text, ` +
      `“${data.text}” took over at frame ${data.frame}`;
  } else {
    const whose = mine ? "" : " (sent elsewhere)";
    panel.steerStatus.textContent = `“${data.text}”${whose} took over at frame ${data.frame}`;
  }
  if (mine) panel.sent = null;
}

function onHold(data) {
  const panel = panels.get(String(data?.node));
  if (!panel || panel.promptId !== data.prompt_id) return;
  if (data.state === "held") {
    setHolding(panel, true);
    panel.steerStatus.textContent = `held before frame ${data.frame}: type, then Steer or Resume ` +
      `(it resumes by itself after ${Math.round(data.timeout_s)} s)`;
  } else {
    setHolding(panel, false);
    const by = { steer: "a steer", resume: "Resume", timeout: "its timeout", cancel: "Cancel" }[data.by] ?? data.by;
    panel.steerStatus.textContent = `resumed at frame ${data.frame} by ${by} after ${Number(data.held_s).toFixed(1)} s`;
  }
}

function showRecord(node, output) {
  const record = output?.longlive_steering;
  if (!Array.isArray(record)) return;
  const panel = panelFor(node.id, record.length > 0);
  if (!panel) return;
  panel.record.textContent = record.length
    ? `longlive_steering (for LongLive Schedule from Steering):\n${JSON.stringify(record)}`
    : "";
  panel.record.style.display = record.length ? "block" : "none";
}

function keepPreviewOutOfThePrompt(nodeType) {
  // After a node's first run the editors (1.35, 1.49) add a player widget, "video-preview", that
  // they leave in the queued prompt as `"video-preview": ""`. ComfyUI's cache keys a node by every
  // input of the prompt, so the second Run with nothing changed ran the node again (a whole decode,
  // and a second mp4). Core Save Video has the same, but saving an in-memory video costs little.
  // The player is a view of the output, never an input: it is marked as none.
  const inherited = nodeType.prototype.addDOMWidget;
  if (typeof inherited !== "function") return;
  nodeType.prototype.addDOMWidget = function (name, ...rest) {
    const widget = inherited.call(this, name, ...rest);
    if (name === EDITOR_VIDEO_WIDGET && widget) {
      widget.options = widget.options ?? {};
      widget.options.serialize = false; // what graphToPrompt leaves out
    }
    return widget;
  };
}

const hostHasEverything = app && api && [app.registerExtension, api.addEventListener, api.apiURL, api.fetchApi]
  .every((f) => typeof f === "function");

if (hostHasEverything) {
  app.registerExtension({
    name: "LongLive.LivePreview",
    setup() {
      api.addEventListener("longlive.chunk", safely((event) => onChunk(event.detail)));
      api.addEventListener("longlive.steer", safely((event) => onSteer(event.detail)));
      api.addEventListener("longlive.hold", safely((event) => onHold(event.detail)));
      api.addEventListener("execution_start", safely((event) => {
        runningPromptId = event.detail?.prompt_id ?? null;
      }));
      api.addEventListener("executing", safely((event) => onExecuting(event.detail)));
      for (const name of ["execution_success", "execution_error", "execution_interrupted"]) {
        api.addEventListener(name, safely(() => onExecutionEnd()));
      }
    },
    beforeRegisterNodeDef(nodeType, nodeData) {
      if (VIDEO_OUTPUT.has(nodeData?.name)) keepPreviewOutOfThePrompt(nodeType);
      if (!PREVIEWING.has(nodeData?.name)) return;
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const result = onExecuted?.apply(this, arguments);
        safely(() => showRecord(this, output))();
        return result;
      };
    },
  });
}
