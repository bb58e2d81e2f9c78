// A waveform for each stem, drawn from the peaks the worker computed once per track (GET /apiv1/waveform, at most
// 2,000 spans, under 20 KB): the browser never decodes audio to draw it. The part played so far is shaded, and a
// click on a waveform seeks there (the mixer's position slider does the same from the keyboard).
import * as api from "./api.js";
import { el } from "./dom.js";

const SCALE = 127; // a waveform's full scale (worker/mixdown.py)
const WIDTH = 800; // the canvas' pixels; CSS stretches it to the row
const HEIGHT = 44;
const NOT_DONE_RETRY_MS = 3000; // the song is still separating: ask again

export class Waveform {
  // stem: the mixer's {track, row}; song: {hash, query}; seek(seconds) moves the mixer.
  constructor(stem, song, seek) {
    this.track = stem.track;
    this.song = song;
    this.seconds = 0;
    this.canvas = el("canvas", {
      class: "waveform", width: String(WIDTH), height: String(HEIGHT), role: "img", "aria-label": `${stem.track} waveform`,
    });
    this.played = el("div", { class: "waveform-played", "aria-hidden": "true" });
    this.root = el("div", { class: "waveform-box", "data-waveform": "loading" }, this.canvas, this.played);
    this.canvas.addEventListener("click", (event) => {
      if (!this.seconds) return;
      const box = this.canvas.getBoundingClientRect();
      seek((this.seconds * (event.clientX - box.left)) / box.width);
    });
  }

  // Asks again while the song is still separating and the waveform is still on the page.
  async load() {
    for (;;) {
      try {
        this.draw(await api.waveform(this.song.hash, this.track, this.song.query));
        return;
      } catch (error) {
        if (error.code === "song_not_done" && this.root.isConnected) {
          await new Promise((resolve) => setTimeout(resolve, NOT_DONE_RETRY_MS));
          continue;
        }
        this.root.dataset.waveform = "missing";
        this.canvas.setAttribute("aria-label", `${this.track}: no waveform (${error.message})`);
        return;
      }
    }
  }

  // Each pixel column spans its share of the buckets: the lowest and highest of them, from the middle line.
  draw({ seconds, buckets, min, max }) {
    const paint = this.canvas.getContext("2d");
    const middle = HEIGHT / 2;
    paint.clearRect(0, 0, WIDTH, HEIGHT);
    paint.fillStyle = "#4c6ef5";
    for (let x = 0; x < WIDTH; x++) {
      const first = Math.floor((x * buckets) / WIDTH);
      const end = Math.max(first + 1, Math.floor(((x + 1) * buckets) / WIDTH));
      let low = 0;
      let high = 0;
      for (let bucket = first; bucket < end && bucket < buckets; bucket++) {
        low = Math.min(low, min[bucket]);
        high = Math.max(high, max[bucket]);
      }
      const top = Math.floor(middle - (high * middle) / SCALE);
      const bottom = Math.max(top + 1, Math.ceil(middle - (low * middle) / SCALE));
      paint.fillRect(x, top, 1, bottom - top);
    }
    this.seconds = seconds;
    this.root.dataset.waveform = "drawn";
    this.canvas.dataset.buckets = String(buckets);
  }

  showPosition(seconds) {
    this.played.style.width = this.seconds ? `${Math.min(100, (100 * seconds) / this.seconds)}%` : "0";
  }
}
