// pcflow's point cloud viewer: the scene, camera and controls around three.js (the global THREE).
// Reads the page's data (JSON in #pcflow-data, written by pcflow.viz), draws every cloud in its
// own panel with one shared camera, and exposes window.pcflowViews for tests.
(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("pcflow-data").textContent);
  const root = document.getElementById("pcflow-root");
  // viridis at 9 evenly spaced stops (matplotlib's table), interpolated linearly.
  const VIRIDIS = [
    [0.267, 0.005, 0.329], [0.278, 0.175, 0.483], [0.230, 0.322, 0.546],
    [0.173, 0.449, 0.558], [0.128, 0.567, 0.551], [0.153, 0.683, 0.502],
    [0.369, 0.789, 0.383], [0.678, 0.864, 0.190], [0.993, 0.906, 0.144],
  ];
  const NO_VALUE = [0.62, 0.62, 0.62];

  function colourAt(t) {
    const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
    const f = x - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
  }

  function bytes(base64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(base64).buffer; // native, fastest
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out.buffer;
  }

  // Positions are 16-bit integers over each view's box: x = offset + q * scale, per axis.
  function decodePositions(view) {
    const q = new Uint16Array(bytes(view.positions));
    const out = new Float32Array(q.length);
    const [o0, o1, o2] = view.offset, [s0, s1, s2] = view.scale;
    for (let i = 0; i < q.length; i += 3) {
      out[i] = o0 + q[i] * s0;
      out[i + 1] = o1 + q[i + 1] * s1;
      out[i + 2] = o2 + q[i + 2] * s2;
    }
    return out;
  }

  function element(tag, className, parent, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // ---------------------------------------------------------------------------------- page
  const toolbar = element("div", "pcflow-toolbar", root);
  const grid = element("div", "pcflow-grid", root);
  // Panels shrink to fit a narrow window (or a docs page's frame), never grow past panelSize.
  grid.style.gridTemplateColumns = `repeat(${data.columns}, minmax(0, ${data.panelSize}px))`;
  const dpr = window.devicePixelRatio || 1;
  const side = Math.round(data.panelSize * dpr);
  const panels = data.panels.map((panel) => {
    const box = element("figure", "pcflow-panel", grid);
    if (panel.image) {
      const image = element("img", "pcflow-image", box);
      image.src = panel.image;
      image.alt = panel.title || "input image";
      image.style.width = panel.positions ? "50%" : "100%";
      image.style.aspectRatio = "1";
    }
    let canvas = null;
    if (panel.positions) {
      canvas = element("canvas", "pcflow-canvas", box);
      canvas.width = canvas.height = side;
      canvas.style.width = "100%";
      canvas.style.aspectRatio = "1";
    }
    if (panel.title) element("figcaption", "", box, panel.title);
    return { panel, canvas };
  });
  const message = element("p", "pcflow-message", root);

  // ------------------------------------------------------------------------------- scenes
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  } catch (error) {
    message.textContent = "This view needs WebGL, which this browser has turned off: " + error.message;
    window.pcflowError = String(error.message);
    console.warn("pcflow viewer: no WebGL:", error);
    return;
  }
  renderer.outputColorSpace = THREE.LinearSRGBColorSpace; // colours are written as given (sRGB)
  renderer.setPixelRatio(1);
  renderer.setSize(side, side, false);
  renderer.setClearColor(0xffffff, 1);

  const steps = data.steps ? data.steps.count : 1;
  const views = [];
  const lower = [Infinity, Infinity, Infinity], upper = [-Infinity, -Infinity, -Infinity];
  for (const { panel, canvas } of panels) {
    if (!canvas) continue;
    const all = decodePositions(panel);
    const count = panel.count;
    const frame = steps === 1 ? all : all.slice((steps - 1) * count * 3); // the shape itself
    // The camera frames the shapes (a flow's last step): its base draws spread much wider.
    for (let i = 0; i < frame.length; i++) {
      const axis = i % 3;
      if (frame[i] < lower[axis]) lower[axis] = frame[i];
      if (frame[i] > upper[axis]) upper[axis] = frame[i];
    }
    const geometry = new THREE.BufferGeometry();
    const position = new THREE.BufferAttribute(new Float32Array(frame), 3);
    geometry.setAttribute("position", position);
    geometry.setAttribute("color", new THREE.BufferAttribute(new Float32Array(count * 3), 3));
    const material = new THREE.PointsMaterial({ size: data.pointSize * dpr, sizeAttenuation: false, vertexColors: true });
    const scene = new THREE.Scene();
    scene.add(new THREE.Points(geometry, material));
    const values = panel.values ? new Float32Array(bytes(panel.values)) : null;
    views.push({ canvas, context: canvas.getContext("2d"), scene, geometry, material, all, frame, values, count, title: panel.title || "" });
  }

  // One camera for every panel: turning one turns them all.
  const centre = new THREE.Vector3((lower[0] + upper[0]) / 2, (lower[1] + upper[1]) / 2, (lower[2] + upper[2]) / 2);
  const radius = Math.max(1e-6, 0.5 * Math.hypot(upper[0] - lower[0], upper[1] - lower[1], upper[2] - lower[2]));
  const camera = new THREE.PerspectiveCamera(30, 1, radius / 100, radius * 100);
  const up = data.yUp ? [0, 1, 0] : [0, 0, 1];
  camera.up.set(...up);
  function resetCamera() {
    const distance = radius / Math.sin((15 * Math.PI) / 180);
    const azimuth = (data.azimuth * Math.PI) / 180, elevation = (data.elevation * Math.PI) / 180;
    const across = Math.cos(elevation) * Math.sin(azimuth), along = Math.cos(elevation) * Math.cos(azimuth);
    const offset = data.yUp
      ? new THREE.Vector3(across, Math.sin(elevation), along)
      : new THREE.Vector3(across, -along, Math.sin(elevation));
    camera.position.copy(centre).addScaledVector(offset, distance);
    camera.lookAt(centre);
    for (const view of views) {
      if (!view.controls) continue;
      view.controls.target.copy(centre);
      view.controls.update();
    }
  }

  let pending = false;
  function renderAll() {
    pending = false;
    for (const view of views) {
      renderer.render(view.scene, camera);
      view.context.clearRect(0, 0, side, side);
      view.context.drawImage(renderer.domElement, 0, 0, side, side);
    }
  }
  function requestRender() {
    if (!pending) {
      pending = true;
      requestAnimationFrame(renderAll);
    }
  }

  for (const view of views) {
    const controls = new THREE.OrbitControls(camera, view.canvas);
    controls.enableDamping = false;
    controls.addEventListener("change", () => {
      for (const other of views) if (other !== view) other.controls.target.copy(controls.target);
      requestRender();
    });
    view.controls = controls;
  }
  resetCamera();

  // -------------------------------------------------------------------------------- colours
  const hasValues = views.some((view) => view.values);
  const axisUp = data.yUp ? 1 : 2;
  let mode = hasValues && data.colour !== "height" ? "value" : "height";
  const heightRange = (() => {
    let lo = Infinity, hi = -Infinity;
    for (const view of views) {
      for (let i = axisUp; i < view.frame.length; i += 3) {
        lo = Math.min(lo, view.frame[i]);
        hi = Math.max(hi, view.frame[i]);
      }
    }
    return [lo, hi];
  })();
  function paint() {
    const [lo, hi] = mode === "value" ? data.valueRange : heightRange;
    const span = hi > lo ? hi - lo : 1;
    for (const view of views) {
      const colours = view.geometry.getAttribute("color");
      const out = colours.array;
      for (let i = 0; i < view.count; i++) {
        let rgb;
        if (mode === "value") rgb = view.values ? colourAt((view.values[i] - lo) / span) : NO_VALUE;
        else rgb = colourAt((view.frame[3 * i + axisUp] - lo) / span);
        out[3 * i] = rgb[0];
        out[3 * i + 1] = rgb[1];
        out[3 * i + 2] = rgb[2];
      }
      colours.needsUpdate = true;
    }
    legendLow.textContent = lo.toPrecision(3);
    legendHigh.textContent = hi.toPrecision(3);
    legendName.textContent = mode === "value" ? data.valueName : data.yUp ? "height (y)" : "height (z)";
    requestRender();
  }

  // -------------------------------------------------------------------------------- toolbar
  function control(label, node) {
    const wrap = element("label", "pcflow-control", toolbar, label + " ");
    wrap.appendChild(node);
    return node;
  }
  const colourSelect = control("colour", document.createElement("select"));
  for (const [value, text] of [["height", "height"], ["value", data.valueName]]) {
    if (value === "value" && !hasValues) continue;
    const option = element("option", "", colourSelect, text);
    option.value = value;
  }
  colourSelect.value = mode;
  colourSelect.addEventListener("change", () => {
    mode = colourSelect.value;
    paint();
  });
  const legend = element("span", "pcflow-legend", toolbar);
  const legendLow = element("span", "", legend);
  element("span", "pcflow-ramp", legend);
  const legendHigh = element("span", "", legend);
  const legendName = element("span", "pcflow-legend-name", legend);

  const size = control("point size", document.createElement("input"));
  Object.assign(size, { type: "range", min: "0.5", max: "8", step: "0.5", value: String(data.pointSize) });
  size.addEventListener("input", () => {
    for (const view of views) view.material.size = Number(size.value) * dpr;
    requestRender();
  });
  const reset = element("button", "", toolbar, "reset view");
  reset.addEventListener("click", () => {
    resetCamera();
    requestRender();
  });
  const snap = element("button", "", toolbar, "PNG snapshot");
  snap.addEventListener("click", () => {
    const link = document.createElement("a");
    link.href = snapshot();
    link.download = (data.title || "pcflow-view").replace(/[^\w.-]+/g, "_") + ".png";
    link.click();
  });

  // All panels side by side, captions under them, as one PNG (a data URL).
  function snapshot() {
    renderAll();
    const caption = 24;
    const columns = Math.min(views.length, data.columns);
    const rows = Math.ceil(views.length / columns);
    const sheet = document.createElement("canvas");
    sheet.width = columns * side;
    sheet.height = rows * (side + caption);
    const context = sheet.getContext("2d");
    context.fillStyle = "#fff";
    context.fillRect(0, 0, sheet.width, sheet.height);
    context.fillStyle = "#000";
    context.font = `${Math.round(13 * dpr)}px sans-serif`;
    context.textAlign = "center";
    views.forEach((view, i) => {
      const x = (i % columns) * side, y = Math.floor(i / columns) * (side + caption);
      context.drawImage(view.canvas, x, y);
      context.fillText(view.title, x + side / 2, y + side + caption * 0.7);
    });
    return sheet.toDataURL("image/png");
  }

  // ---------------------------------------------------------------------------- flow steps
  let showStep = null;
  if (data.steps) {
    const slider = control("step", document.createElement("input"));
    Object.assign(slider, { type: "range", min: "0", max: String(steps - 1), step: "0.01", value: String(steps - 1) });
    const label = element("span", "pcflow-step", toolbar);
    const play = element("button", "", toolbar, "play");
    showStep = (t) => {
      const k = Math.min(steps - 2, Math.floor(t)), f = t - k;
      for (const view of views) {
        const out = view.geometry.getAttribute("position");
        const a = k * view.count * 3, b = a + view.count * 3;
        for (let i = 0; i < view.count * 3; i++) {
          out.array[i] = view.all[a + i] + f * (view.all[b + i] - view.all[a + i]);
        }
        out.needsUpdate = true;
      }
      label.textContent = data.steps.labels[Math.round(t)];
      slider.value = String(t);
      requestRender();
    };
    slider.addEventListener("input", () => showStep(Number(slider.value)));
    let playing = null;
    play.addEventListener("click", () => {
      if (playing !== null) {
        cancelAnimationFrame(playing);
        playing = null;
        play.textContent = "play";
        return;
      }
      let t = Number(slider.value) >= steps - 1 ? 0 : Number(slider.value);
      let last = performance.now();
      play.textContent = "pause";
      const tick = (now) => {
        t = Math.min(steps - 1, t + ((now - last) / 1000) * data.steps.perSecond);
        last = now;
        showStep(t);
        if (t < steps - 1) playing = requestAnimationFrame(tick);
        else {
          playing = null;
          play.textContent = "play";
        }
      };
      playing = requestAnimationFrame(tick);
    });
    label.textContent = data.steps.labels[steps - 1];
  }

  paint();
  renderAll();
  window.pcflowFirstFrame = performance.now();
  window.pcflowViews = views.map((view) => ({
    count: view.geometry.getAttribute("position").count,
    positions: view.geometry.getAttribute("position").array,
    values: view.values,
    canvas: view.canvas,
    controls: view.controls,
  }));
  window.pcflowView = {
    camera, render: renderAll, snapshot, reset: resetCamera, showStep,
    setColour: (value) => { colourSelect.value = mode = value; paint(); renderAll(); },
    setPointSize: (value) => { size.value = String(value); size.dispatchEvent(new Event("input")); renderAll(); },
  };
  document.body.dataset.pcflowReady = "1";
})();
