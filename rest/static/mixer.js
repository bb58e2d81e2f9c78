// The mixer of a separated song: each stem in its own <audio> element, all started, sought and kept in step
// together; each routed through Web Audio (a gain for volume, mute and solo, an analyser for its level meter).
// While the song is separated it holds the part ready so far (`readySeconds`), and is extended with longer parts
// and the whole: reloaded in place, playing on from where it was (or from where it had to wait for more).
import { trackBlob } from "./api.js";
import { el, formatTime } from "./dom.js";

const DRIFT_LIMIT = 0.05; // seconds a stem may stray from the first one before it is pulled back
const METER_FLOOR_DB = -60; // the meter's left end
const STEM_ORDER = ["vocals", "drums", "bass", "other", "guitar", "piano"]; // Demucs' order; no_<stem> after <stem>

let context = null; // one AudioContext for the page, made on the first Play (browsers want a user gesture)
let playingMixer = null; // one song plays at a time

function audioContext() {
  context ??= window.AudioContext ? new AudioContext() : null;
  return context;
}

export class Mixer {
  // tracks: {name: url} from the status route; songName names downloads and labels; readySeconds: the part
  // ready so far, or null for the whole.
  constructor(songName, tracks, readySeconds = null) {
    this.songName = songName;
    this.baseName = songName.replace(/\.[^.]+$/, "");
    this.readySeconds = readySeconds;
    this.playing = false;
    this.waiting = false; // played to the end of the part: plays on when a longer one comes
    this.extending = false;
    this.connected = false;
    const rank = (track) => STEM_ORDER.indexOf(track.replace(/^no_/, "")) + (track.startsWith("no_") ? 0.5 : 0);
    const ordered = Object.entries(tracks).sort(([one], [other]) => rank(one) - rank(other));
    this.stems = ordered.map(([track, url]) => this.buildStem(track, url));
    this.root = this.build();
  }

  build() {
    this.playButton = el("button", { type: "button", class: "play", "aria-pressed": "false", disabled: true }, "Play");
    this.playButton.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.seek = el("input", {
      type: "range", class: "seek", min: "0", max: "0", step: "0.01", value: "0", disabled: true,
      "aria-label": `Position in ${this.songName}`,
    });
    this.seek.addEventListener("input", () => this.seekTo(Number(this.seek.value)));
    this.clock = el("span", { class: "clock", "aria-hidden": "true" }, "0:00 / 0:00");
    this.downloadAll = el("button", { type: "button", class: "download-all", disabled: true }, "Download all stems");
    this.downloadAll.addEventListener("click", () => this.downloadEvery());
    this.note = el("p", { class: "mixer-note", role: "status" }, "Loading the stems…");
    return el(
      "section", { class: "mixer", "aria-label": `Mixer for ${this.songName}` },
      el("div", { class: "transport" }, this.playButton, this.seek, this.clock),
      el("ul", { class: "stems" }, ...this.stems.map((stem) => stem.row)),
      el("div", { class: "mixer-actions" }, this.downloadAll, this.note),
    );
  }

  buildStem(track, url) {
    const address = new URL(url, location.href); // same origin, whatever host the server named
    const stem = { track, path: address.pathname + address.search, muted: false, soloed: false, peak: 0 };
    const extension = address.pathname.split(".").pop();
    stem.audio = el("audio", { preload: "auto", "data-track": track });
    stem.mute = el("button", { type: "button", class: "mute", "aria-pressed": "false", "aria-label": `Mute ${track}` }, "Mute");
    stem.solo = el("button", { type: "button", class: "solo", "aria-pressed": "false", "aria-label": `Solo ${track}` }, "Solo");
    stem.volume = el("input", {
      type: "range", class: "volume", min: "0", max: "1", step: "0.01", value: "1", "aria-label": `${track} volume`,
    });
    stem.meter = el("canvas", { class: "meter", width: "180", height: "14", "aria-hidden": "true" });
    stem.download = el("a", {
      class: "button download", download: `${this.baseName}-${track}.${extension}`, "aria-label": `Download ${track}`,
    }, "Download");
    stem.mute.addEventListener("click", () => this.toggle(stem, "muted", stem.mute));
    stem.solo.addEventListener("click", () => this.toggle(stem, "soloed", stem.solo));
    stem.volume.addEventListener("input", () => this.applyGains());
    stem.row = el(
      "li", { class: "stem", "data-track": track, "data-gain": "1", "data-level": "0" },
      el("span", { class: "stem-name" }, track), stem.mute, stem.solo, stem.volume, stem.meter, stem.download, stem.audio,
    );
    this.drawMeter(stem, 0);
    return stem;
  }

  get partial() {
    return this.readySeconds !== null;
  }

  // Fetch every stem (with the API key, which <audio> could not send) and wait until each knows its length.
  load() {
    this.loaded ??= this.loadAll().then(() => {
      for (const control of [this.playButton, this.seek, this.downloadAll]) control.disabled = false;
      this.showTime(0);
    });
    return this.loaded;
  }

  async loadAll() {
    try {
      const blobs = await Promise.all(this.stems.map((stem) => trackBlob(stem.path)));
      await Promise.all(this.stems.map((stem, index) => this.loadStem(stem, blobs[index])));
    } catch (error) {
      this.note.textContent = `Could not load the stems: ${error.message}`;
      throw error;
    }
    this.duration = Math.max(...this.stems.map((stem) => stem.audio.duration || 0));
    this.seek.max = String(this.duration);
    this.note.textContent = this.partial
      ? `First ${formatTime(this.readySeconds)} of ${this.stems.length} stems ready; the rest is being separated`
      : `${this.stems.length} stems ready`;
  }

  async loadStem(stem, blob) {
    if (stem.objectUrl) URL.revokeObjectURL(stem.objectUrl);
    stem.objectUrl = URL.createObjectURL(blob);
    const ready = new Promise((resolve, reject) => {
      stem.audio.addEventListener("loadedmetadata", resolve, { once: true });
      stem.audio.addEventListener("error", () => reject(new Error(`${stem.track} does not play here`)), { once: true });
    });
    stem.audio.src = stem.objectUrl;
    stem.download.href = stem.objectUrl;
    await ready;
  }

  // A longer part (readySeconds), or the whole (null): every stem reloaded, and played on from where it was.
  async extend(readySeconds) {
    if (this.extending) return; // the next status asks again
    this.extending = true;
    try {
      await this.load();
      const position = this.master.currentTime;
      const resume = this.playing || this.waiting;
      this.readySeconds = readySeconds;
      if (this.playing) this.pause();
      await this.loadAll();
      this.seekTo(position);
      if (resume) await this.play();
    } finally {
      this.extending = false;
    }
  }

  get master() {
    return this.stems[0].audio;
  }

  connect() {
    const audio = audioContext();
    if (this.connected || !audio) return;
    for (const stem of this.stems) {
      stem.gain = audio.createGain();
      stem.analyser = audio.createAnalyser();
      stem.analyser.fftSize = 1024;
      stem.samples = new Float32Array(stem.analyser.fftSize);
      audio.createMediaElementSource(stem.audio).connect(stem.gain).connect(stem.analyser).connect(audio.destination);
    }
    this.connected = true;
    this.applyGains();
  }

  toggle(stem, flag, button) {
    stem[flag] = !stem[flag];
    button.setAttribute("aria-pressed", String(stem[flag]));
    this.applyGains();
  }

  // Mute wins over solo; when any stem is soloed, only soloed stems sound.
  applyGains() {
    const anySoloed = this.stems.some((stem) => stem.soloed);
    for (const stem of this.stems) {
      const audible = !stem.muted && (!anySoloed || stem.soloed);
      const gain = audible ? Number(stem.volume.value) : 0;
      stem.row.dataset.gain = String(gain);
      if (stem.gain) stem.gain.gain.value = gain;
      else if (!audioContext()) stem.audio.volume = gain; // no Web Audio: the element's own volume
    }
  }

  async play() {
    if (playingMixer && playingMixer !== this) playingMixer.pause();
    playingMixer = this;
    this.connect();
    await audioContext()?.resume();
    if (this.master.ended) this.seekTo(0);
    const start = this.master.currentTime;
    for (const stem of this.stems) stem.audio.currentTime = start;
    await Promise.all(this.stems.map((stem) => stem.audio.play()));
    this.playing = true;
    this.waiting = false;
    this.playButton.textContent = "Pause";
    this.playButton.setAttribute("aria-pressed", "true");
    this.master.onended = () => {
      this.pause();
      this.waiting = this.partial; // the rest is on its way: play on when it comes
      if (this.waiting) this.note.textContent = "Waiting for the next part of the stems…";
    };
    requestAnimationFrame(() => this.tick());
  }

  pause() {
    this.waiting = false;
    for (const stem of this.stems) stem.audio.pause();
    this.playing = false;
    this.playButton.textContent = "Play";
    this.playButton.setAttribute("aria-pressed", "false");
    for (const stem of this.stems) this.drawMeter(stem, 0);
  }

  seekTo(seconds) {
    for (const stem of this.stems) stem.audio.currentTime = seconds;
    this.showTime(seconds);
  }

  showTime(seconds) {
    const text = `${formatTime(seconds)} / ${formatTime(this.duration)}`;
    this.clock.textContent = text;
    this.seek.setAttribute("aria-valuetext", `${formatTime(seconds)} of ${formatTime(this.duration)}`);
  }

  tick() {
    if (!this.playing) return;
    const now = this.master.currentTime;
    if (document.activeElement !== this.seek) this.seek.value = String(now);
    this.showTime(now);
    for (const stem of this.stems) {
      if (stem !== this.stems[0] && Math.abs(stem.audio.currentTime - now) > DRIFT_LIMIT) stem.audio.currentTime = now;
      if (stem.analyser) this.drawMeter(stem, this.levelOf(stem));
    }
    requestAnimationFrame(() => this.tick());
  }

  // The stem's level after its gain, 0 (silence, or below METER_FLOOR_DB) to 1 (full scale).
  levelOf(stem) {
    stem.analyser.getFloatTimeDomainData(stem.samples);
    let sum = 0;
    for (const sample of stem.samples) sum += sample * sample;
    const rms = Math.sqrt(sum / stem.samples.length);
    return rms > 0 ? Math.max(0, 1 - (20 * Math.log10(rms)) / METER_FLOOR_DB) : 0;
  }

  drawMeter(stem, level) {
    stem.peak = Math.max(level, stem.peak - 0.01);
    stem.row.dataset.level = level.toFixed(3);
    const canvas = stem.meter;
    const paint = canvas.getContext("2d");
    const { width, height } = canvas;
    paint.fillStyle = "#e6e9ef";
    paint.fillRect(0, 0, width, height);
    const gradient = paint.createLinearGradient(0, 0, width, 0);
    gradient.addColorStop(0, "#2f9e44");
    gradient.addColorStop(0.75, "#f08c00");
    gradient.addColorStop(1, "#e03131");
    paint.fillStyle = gradient;
    paint.fillRect(0, 0, width * level, height);
    if (stem.peak > 0) {
      paint.fillStyle = "#343a40";
      paint.fillRect(Math.min(width - 2, width * stem.peak), 0, 2, height);
    }
  }

  // One download per stem; browsers may ask once whether the page may save several files.
  async downloadEvery() {
    for (const stem of this.stems) {
      stem.download.click();
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  destroy() {
    if (playingMixer === this) this.pause();
    for (const stem of this.stems) if (stem.objectUrl) URL.revokeObjectURL(stem.objectUrl);
  }
}
