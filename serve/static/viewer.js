/* 3D motion viewer on a plain 2D canvas: hand skeletons and object points of motion.json.
 *
 * Coordinates are the camera frame (OpenCV: x right, y down, z forward, metres). The view
 * orbits the clip's centre: azimuth turns about the vertical (y) axis, elevation tilts about
 * the horizontal (x) axis, like a trackball (a drag moves the near side along with the
 * pointer; dragging down looks from above); at azimuth = elevation = 0 the screen shows what the camera saw
 * (x right, y down on screen). Perspective is a pinhole at `distance` in front of the centre.
 *
 * Usage: const v = SvimoViewer.create(canvas, {frameLabel}); v.load(motion, timeSource);
 * window.svimoViewer exposes {frame, azimuth, elevation, zoom} for tests and the console.
 */
(function () {
  "use strict";

  const COLORS = {
    left: "#ff7a3d", leftJoint: "#ffc2a3",
    right: "#2fb9ff", rightJoint: "#a8e2ff",
    tool: "#f2f2f2", target: "#8f8f8f",
    background: "#14181e", text: "#9aa4b1",
  };
  const JOINTS_PER_HAND = 21;
  const MAX_ELEVATION = Math.PI / 2 - 0.01;

  function create(canvas, options = {}) {
    const ctx = canvas.getContext("2d");
    const state = { frame: 0, azimuth: 0, elevation: 0, zoom: 1 };
    let motion = null;        // motion.json, parsed
    let centre = [0, 0, 0];   // of all joints and points over the clip (box centre)
    let radius = 1;           // about the scene's half size (its largest half extent)
    let timeSource = null;    // () => seconds or null (then the viewer keeps its own clock)
    let startMs = performance.now();
    let rafId = null;
    let drawnOnce = false;

    // -- geometry -----------------------------------------------------------------------------

    function bounds(m) {
      const lo = [Infinity, Infinity, Infinity];
      const hi = [-Infinity, -Infinity, -Infinity];
      for (const arrays of [m.joints, m.points]) {
        for (const frame of arrays) {
          for (const p of frame) {
            for (let k = 0; k < 3; k++) {
              if (p[k] < lo[k]) lo[k] = p[k];
              if (p[k] > hi[k]) hi[k] = p[k];
            }
          }
        }
      }
      const c = [0, 1, 2].map((k) => (lo[k] + hi[k]) / 2);
      // The largest half extent, with a margin: the half diagonal would leave the scene small.
      const r = 0.6 * Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]);
      return { centre: c, radius: r > 1e-6 ? r : 0.1 };
    }

    /** A projector for the current view: [x, y, z] (camera frame) -> [sx, sy, depth]. */
    function projector(width, height) {
      const ca = Math.cos(state.azimuth), sa = Math.sin(state.azimuth);
      const ce = Math.cos(state.elevation), se = Math.sin(state.elevation);
      const distance = 3 * radius;
      // Focal length such that the sphere of the scene fills ~85% of the shorter side.
      const focal = (0.85 * Math.min(width, height) / 2) * (distance - radius) / radius
        * state.zoom;
      const cx = width / 2, cy = height / 2;
      return (p) => {
        const x = p[0] - centre[0], y = p[1] - centre[1], z = p[2] - centre[2];
        // About the vertical axis (positive: the near side moves right), then about the
        // horizontal axis (positive: seen from above, i.e. from -y).
        const x1 = ca * x - sa * z;
        const z1 = sa * x + ca * z;
        const y2 = ce * y - se * z1;
        const z2 = se * y + ce * z1;
        const depth = Math.max(z2 + distance, 1e-3 * radius);
        return [cx + focal * x1 / depth, cy + focal * y2 / depth, depth];
      };
    }

    // -- drawing ------------------------------------------------------------------------------

    function resize() {
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
      const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
      }
      return dpr;
    }

    function drawAxes(dpr) {
      // A small gizmo in the corner: the camera frame's axes under the current rotation.
      const size = 22 * dpr;
      const ox = 34 * dpr, oy = canvas.height - 34 * dpr;
      const ca = Math.cos(state.azimuth), sa = Math.sin(state.azimuth);
      const ce = Math.cos(state.elevation), se = Math.sin(state.elevation);
      const axes = [["x", [1, 0, 0], "#e05555"], ["y", [0, 1, 0], "#55c060"],
        ["z", [0, 0, 1], "#5588ee"]];
      ctx.lineWidth = 2 * dpr;
      ctx.font = `${11 * dpr}px sans-serif`;
      for (const [name, [x, y, z], color] of axes) {
        const x1 = ca * x - sa * z, z1 = sa * x + ca * z;
        const y2 = ce * y - se * z1;
        ctx.strokeStyle = color;
        ctx.fillStyle = color;
        ctx.beginPath();
        ctx.moveTo(ox, oy);
        ctx.lineTo(ox + size * x1, oy + size * y2);
        ctx.stroke();
        ctx.fillText(name, ox + (size + 6 * dpr) * x1 - 3 * dpr, oy + (size + 6 * dpr) * y2 + 4 * dpr);
      }
    }

    function draw() {
      const dpr = resize();
      const w = canvas.width, h = canvas.height;
      ctx.fillStyle = COLORS.background;
      ctx.fillRect(0, 0, w, h);
      if (!motion) return;

      const project = projector(w, h);
      const joints = motion.joints[state.frame].map(project);
      const points = motion.points[state.frame].map(project);
      const perObject = motion.points_per_object;

      // Painter's algorithm over all primitives, far ones first.
      const items = [];
      points.forEach((q, i) => items.push({ kind: "point", q, d: q[2],
        color: i < perObject ? COLORS.tool : COLORS.target }));
      for (const [a, b] of motion.bones) {
        const left = a < JOINTS_PER_HAND;
        items.push({ kind: "bone", a: joints[a], b: joints[b], d: (joints[a][2] + joints[b][2]) / 2,
          color: left ? COLORS.left : COLORS.right });
      }
      joints.forEach((q, j) => items.push({ kind: "joint", q, d: q[2] - 1e-6,
        color: j < JOINTS_PER_HAND ? COLORS.leftJoint : COLORS.rightJoint }));
      items.sort((u, v) => v.d - u.d);

      const near = 3 * radius;  // depth of the centre: sizes scale as near / depth
      ctx.lineCap = "round";
      for (const it of items) {
        if (it.kind === "bone") {
          ctx.strokeStyle = it.color;
          ctx.lineWidth = Math.max(1, 3.2 * dpr * near / it.d);
          ctx.beginPath();
          ctx.moveTo(it.a[0], it.a[1]);
          ctx.lineTo(it.b[0], it.b[1]);
          ctx.stroke();
        } else {
          const r = (it.kind === "joint" ? 3.4 : 2.0) * dpr * near / it.d;
          ctx.fillStyle = it.color;
          ctx.beginPath();
          ctx.arc(it.q[0], it.q[1], Math.max(0.8, r), 0, 2 * Math.PI);
          ctx.fill();
        }
      }

      drawAxes(dpr);
      if (options.frameLabel) {
        const t = state.frame / motion.fps;
        options.frameLabel.textContent =
          `frame ${state.frame + 1} / ${motion.num_frames}  (${t.toFixed(2)} s)`;
      }
      if (!drawnOnce) {
        drawnOnce = true;
        canvas.dataset.frames = String(motion.num_frames);
        canvas.dataset.drawn = "1";
      }
    }

    function tick() {
      if (motion) {
        let seconds = timeSource ? timeSource() : null;
        if (seconds === null || !Number.isFinite(seconds)) {
          seconds = (performance.now() - startMs) / 1000;
        }
        state.frame = Math.floor(seconds * motion.fps + 1e-6) % motion.num_frames;
      }
      draw();
      rafId = requestAnimationFrame(tick);
    }

    // -- interaction --------------------------------------------------------------------------

    let drag = null;  // {id, x, y, azimuth, elevation} while a pointer is down
    canvas.addEventListener("pointerdown", (e) => {
      drag = { id: e.pointerId, x: e.clientX, y: e.clientY,
        azimuth: state.azimuth, elevation: state.elevation };
      canvas.setPointerCapture(e.pointerId);
      canvas.classList.add("dragging");
      e.preventDefault();
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      const perPixel = Math.PI / Math.max(200, canvas.clientWidth);  // half a turn per width
      state.azimuth = drag.azimuth + (e.clientX - drag.x) * perPixel;
      state.elevation = Math.max(-MAX_ELEVATION, Math.min(MAX_ELEVATION,
        drag.elevation + (e.clientY - drag.y) * perPixel));
    });
    const endDrag = (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      drag = null;
      canvas.classList.remove("dragging");
    };
    canvas.addEventListener("pointerup", endDrag);
    canvas.addEventListener("pointercancel", endDrag);
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      state.zoom = Math.max(0.2, Math.min(20, state.zoom * Math.exp(-e.deltaY * 0.0015)));
    }, { passive: false });

    // -- public -------------------------------------------------------------------------------

    const viewer = {
      get frame() { return state.frame; },
      get azimuth() { return state.azimuth; },
      get elevation() { return state.elevation; },
      get zoom() { return state.zoom; },
      /** Show a motion.json; timeSource() gives the clip time in seconds (or null). */
      load(m, source = null) {
        if (!m || !Array.isArray(m.joints) || m.joints.length === 0) {
          throw new Error("motion.json has no frames");
        }
        motion = m;
        ({ centre, radius } = bounds(m));
        timeSource = source;
        startMs = performance.now();
        state.frame = 0;
        if (rafId === null) rafId = requestAnimationFrame(tick);
      },
      /** Back to the camera's view. */
      reset() {
        state.azimuth = 0;
        state.elevation = 0;
        state.zoom = 1;
      },
      /** Stop animating and forget the motion (the canvas is cleared). */
      clear() {
        if (rafId !== null) cancelAnimationFrame(rafId);
        rafId = null;
        motion = null;
        drawnOnce = false;
        delete canvas.dataset.frames;
        delete canvas.dataset.drawn;
        state.frame = 0;
        if (options.frameLabel) options.frameLabel.textContent = "";
        draw();
      },
    };
    window.svimoViewer = viewer;
    return viewer;
  }

  window.SvimoViewer = { create, COLORS };
})();
