/* svimo web page: read /v1/config, submit a generation, follow its events, show its files.
 *
 * The server is the judge of every input (the form is novalidate): whatever it answers with a
 * 4xx/429/503 is shown verbatim in #error (its "detail"), with Retry-After when it gives one.
 * URLs are relative to the page, so the app also works under a route prefix ("/svimo/").
 */
(function () {
  "use strict";

  const RECONNECT_MS = 1000;
  const ENDED = ["done", "failed"];
  const DOWNLOADS = ["preview.mp4", "preview.png", "motion.json", "motion.npz"];

  const $ = (id) => document.getElementById(id);
  const el = {
    config: $("config"), form: $("form"), image: $("image"), thumbBox: $("thumb-box"),
    thumb: $("thumb"), imageHint: $("image-hint"), prompt: $("prompt"),
    promptHint: $("prompt-hint"), mode: $("mode"), steps: $("steps"), seed: $("seed"),
    guidance: $("guidance"), generate: $("generate"), status: $("status"),
    progress: $("progress"), error: $("error"), placeholder: $("placeholder"),
    outputs: $("outputs"), video: $("video"), motionFigure: $("motion-figure"),
    motionVideo: $("motion-video"), view3dBox: $("view3d-box"), view3d: $("view3d"),
    noMotion: $("no-motion"), downloads: $("downloads"), resetView: $("reset-view"),
    frameLabel: $("frame-label"), keyBox: $("key-box"), apiKey: $("api-key"),
    motionBox: $("motion-box"), motionIn: $("motion"), intrinsics: $("intrinsics"),
    videoBox: $("video-box"), videoIn: $("video-in"),
  };
  const KEY_STORE = "svimo-api-key";

  const viewer = window.SvimoViewer.create(el.view3d, { frameLabel: el.frameLabel });
  let config = null;
  let job = null;        // {id, timer} of the generation being followed
  let thumbUrl = null;   // object URL of the thumbnail, revoked when replaced
  let fileUrls = [];     // object URLs of a keyed app's result files, revoked when replaced

  // -- helpers --------------------------------------------------------------------------------

  function setStatus(text, step = 0, total = 0) {
    el.status.textContent = text;
    el.progress.max = Math.max(1, total);
    el.progress.value = Math.min(step, Math.max(1, total));
  }

  /** The API key as a bearer token, where the server wants one. */
  function authHeaders() {
    const key = el.apiKey.value.trim();
    return config && config.auth && key ? { Authorization: `Bearer ${key}` } : {};
  }

  /** A URL the page can show a result file by: the file's own, or, where the server wants a
   * key (which a <video> cannot send), an object URL of the file fetched with it. */
  async function fileUrl(url) {
    if (!(config && config.auth)) return url;
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const local = URL.createObjectURL(await response.blob());
    fileUrls.push(local);
    return local;
  }

  function showError(message) {
    el.error.textContent = message;
  }

  /** The server's message of an error response: "detail" as a string, or FastAPI's list. */
  async function errorMessage(response) {
    const text = await response.text();
    let detail = null;
    try {
      detail = JSON.parse(text).detail;
    } catch (_) {
      detail = null;
    }
    let message;
    if (typeof detail === "string") {
      message = detail;
    } else if (Array.isArray(detail)) {
      message = detail.map((d) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return (where ? `${where}: ` : "") + (d.msg || JSON.stringify(d));
      }).join("\n");
    } else if (detail != null) {
      message = JSON.stringify(detail);
    } else {
      message = text.trim() || response.statusText;
    }
    let out = `${response.status} ${response.statusText}: ${message}`.replace(/\s+:/, ":");
    const retry = response.headers.get("Retry-After");
    if (retry !== null) out += `\nRetry after ${retry} s.`;
    return out;
  }

  function formatBytes(n) {
    return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
  }

  // -- configuration --------------------------------------------------------------------------

  async function loadConfig() {
    let response;
    try {
      response = await fetch("v1/config");
    } catch (e) {
      el.config.textContent = "server unreachable";
      showError(`Could not reach the server: ${e.message}`);
      return;
    }
    if (!response.ok) {
      el.config.textContent = "no configuration";
      showError(await errorMessage(response));
      return;
    }
    config = await response.json();
    el.keyBox.hidden = !config.auth;
    el.apiKey.value = localStorage.getItem(KEY_STORE) || "";
    el.config.textContent = `${config.num_frames} frames x ${config.width}x${config.height}` +
      ` px at ${config.fps} fps`;
    el.mode.replaceChildren(...config.modes.map((m) => new Option(m.replace(/_/g, " "), m)));
    showModeInputs();
    el.steps.value = config.default_steps;
    el.steps.max = config.max_steps;
    el.steps.title = `1 to ${config.max_steps}`;
    el.imageHint.textContent = `PNG, JPEG or WebP, up to ${formatBytes(config.max_image_bytes)};` +
      ` resized to ${config.width}x${config.height}.`;
    el.promptHint.textContent = `Up to ${config.max_prompt_tokens} tokens.`;
    el.generate.disabled = false;
  }

  // -- input ----------------------------------------------------------------------------------

  el.image.addEventListener("change", () => {
    if (thumbUrl) URL.revokeObjectURL(thumbUrl);
    thumbUrl = null;
    const file = el.image.files[0];
    if (!file) {
      el.thumbBox.hidden = true;
      return;
    }
    thumbUrl = URL.createObjectURL(file);
    el.thumb.src = thumbUrl;
    el.thumbBox.hidden = false;
  });
  /** The uploads the chosen mode takes: a motion (motion_to_video) or a video
   * (video_to_motion). */
  function showModeInputs() {
    el.motionBox.hidden = el.mode.value !== "motion_to_video";
    el.videoBox.hidden = el.mode.value !== "video_to_motion";
  }
  el.mode.addEventListener("change", showModeInputs);

  el.apiKey.addEventListener("change", () => {
    localStorage.setItem(KEY_STORE, el.apiKey.value.trim());
  });
  // A file the browser cannot show is still sent: the server says what is wrong with it.
  el.thumb.addEventListener("error", () => { el.thumbBox.hidden = true; });

  el.form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });

  async function submit() {
    showError("");
    const file = el.image.files[0];
    if (!file) {
      showError("Choose an image first.");
      return;
    }
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("prompt", el.prompt.value);
    form.append("mode", el.mode.value);
    // only what the mode takes: the server refuses the others
    if (el.mode.value === "motion_to_video") {
      if (el.motionIn.files[0]) form.append("motion", el.motionIn.files[0]);
      if (el.intrinsics.value.trim() !== "") form.append("K", el.intrinsics.value.trim());
    }
    if (el.mode.value === "video_to_motion" && el.videoIn.files[0]) {
      form.append("video", el.videoIn.files[0]);
    }
    for (const [input, name] of [[el.steps, "num_steps"], [el.seed, "seed"],
      [el.guidance, "guidance"]]) {
      if (input.value.trim() !== "") form.append(name, input.value.trim());
    }

    stopFollowing();
    clearResults();
    el.generate.disabled = true;
    setStatus("submitting\u2026");
    let response;
    try {
      response = await fetch("v1/generations",
        { method: "POST", body: form, headers: authHeaders() });
    } catch (err) {
      setStatus("not submitted");
      showError(`Could not reach the server: ${err.message}`);
      el.generate.disabled = false;
      return;
    }
    if (!response.ok) {
      setStatus("not submitted");
      showError(await errorMessage(response));
      el.generate.disabled = false;
      return;
    }
    const body = await response.json();
    follow(body.id);
    render(body);
  }

  // -- following a generation -----------------------------------------------------------------

  function follow(id) {
    job = { id, abort: new AbortController(), started: performance.now(), failures: 0 };
    listen(job);
  }

  function stopFollowing() {
    if (job) job.abort.abort();
    job = null;
  }

  /** Follow the generation's server-sent events (read with fetch, which can send the API
   * key, unlike EventSource); a dropped stream is opened again, up to 10 times in a row. */
  async function listen(current) {
    while (job === current) {
      let ended = false;
      try {
        const response = await fetch(`v1/generations/${encodeURIComponent(current.id)}/events`,
          { headers: authHeaders(), signal: current.abort.signal });
        if (!response.ok) {
          finish("lost", await errorMessage(response));
          return;
        }
        current.failures = 0;
        ended = await readEvents(response.body, (name, data) => {
          if (job !== current) return;
          if (name === "status") render(data);
          if (name === "gone") finish("lost", "The server no longer knows this generation.");
        });
      } catch (err) {
        if (current.abort.signal.aborted) return;
        current.failures += 1;
        if (current.failures >= 10) {
          finish("lost contact", `Could not reach the server: ${err.message}`);
          return;
        }
      }
      if (ended || job !== current) return;
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  /** Calls onEvent(name, parsed data) for each event of a text/event-stream body; true when
   * the stream's last event ended the generation. */
  async function readEvents(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return ended;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trim());
        }
        if (!data.length) continue;  // a keep-alive comment
        const parsed = JSON.parse(data.join("\n"));
        ended = name === "gone" || (name === "status" && ENDED.includes(parsed.status));
        onEvent(name, parsed);
      }
    }
  }

  function elapsed() {
    return job ? ` \u2014 ${((performance.now() - job.started) / 1000).toFixed(1)} s` : "";
  }

  function render(body) {
    if (body.status === "queued") {
      const k = body.position;
      const where = k == null ? "" : ` (position ${k}${k === 0 ? ", next" : ""})`;
      setStatus(`queued${where}${elapsed()}`);
    } else if (body.status === "running") {
      const total = body.num_steps || 0;
      setStatus(`running: step ${body.step} of ${total}${elapsed()}`, body.step, total);
    } else if (body.status === "done") {
      const took = elapsed();
      finish(`done${took}`, "");
      el.progress.value = el.progress.max;
      showResults(body.files || {});
    } else if (body.status === "failed") {
      finish("failed", body.error || "The generation failed without a message.");
    }
  }

  function finish(statusText, error) {
    setStatus(statusText, el.progress.value, el.progress.max);
    if (error) showError(error);
    stopFollowing();
    el.generate.disabled = false;
  }

  // -- results --------------------------------------------------------------------------------

  function clearResults() {
    el.outputs.hidden = true;
    el.placeholder.hidden = false;
    for (const v of [el.video, el.motionVideo]) {
      v.removeAttribute("src");
      v.load();
    }
    el.motionFigure.hidden = true;
    el.view3dBox.hidden = true;
    el.noMotion.hidden = true;
    el.downloads.replaceChildren();
    viewer.clear();
    for (const url of fileUrls) URL.revokeObjectURL(url);
    fileUrls = [];
  }

  async function showResults(files) {
    el.placeholder.hidden = true;
    el.outputs.hidden = false;
    const urls = {};
    try {
      for (const name of Object.keys(files)) urls[name] = await fileUrl(files[name]);
    } catch (err) {
      showError(`Could not load the results: ${err.message}`);
      return;
    }

    if (urls["video.mp4"]) el.video.src = urls["video.mp4"];
    if (urls["motion_video.mp4"]) {
      el.motionVideo.src = urls["motion_video.mp4"];
      el.motionFigure.hidden = false;
    }

    const links = DOWNLOADS.filter((n) => files[n])
      .concat(Object.keys(files).filter((n) => !DOWNLOADS.includes(n)).sort());
    el.downloads.replaceChildren(...links.map((name) => {
      const a = document.createElement("a");
      a.href = urls[name];
      a.download = name;
      a.textContent = name;
      const li = document.createElement("li");
      li.append(a);
      return li;
    }));

    if (urls["motion.json"]) {
      el.view3dBox.hidden = false;
      loadMotion(urls["motion.json"]);
    } else {
      el.noMotion.hidden = false;
    }
  }

  async function loadMotion(url) {
    const current = el.video.src;
    let motion;
    try {
      const response = await fetch(url, { headers: authHeaders() });
      if (!response.ok) throw new Error(await errorMessage(response));
      motion = await response.json();
    } catch (err) {
      showError(`3D view: could not load motion.json: ${err.message}`);
      return;
    }
    if (el.video.src !== current) return;  // results were replaced meanwhile
    // The viewer follows the video's clock while it has one, so both show the same frame.
    const videoTime = () => (el.video.readyState >= 2 ? el.video.currentTime : null);
    try {
      viewer.load(motion, videoTime);
    } catch (err) {
      showError(`3D view: ${err.message}`);
    }
  }

  el.resetView.addEventListener("click", () => viewer.reset());

  loadConfig();
})();
