// One song on the page: its upload, its state as the status route tells it (polled until done or failed), and
// its mixer: opened on the first part of the stems while the rest is separated, extended as parts arrive. A song
// is identified by its songhash and the options it was separated with.
import * as api from "./api.js";
import { el, formatDuration } from "./dom.js";
import { attachMixTools } from "./mix-tools.js";
import { Mixer } from "./mixer.js";

const POLL_MS = 1000;
const RETRY_MS = 3000; // after an error talking to the server
const EXTEND_SECONDS = 20; // a longer part reloads the stems once it is this much longer (or the whole is done)

// The options the result is named by, as the server answered them (a preview's range, as it chose it).
function queryOf(options) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(options)) {
    if (value !== null && value !== undefined && name !== "preview") query.set(name, String(value));
  }
  return query.toString();
}

export class SongCard {
  // song: {name, hash (once uploaded), query (the options as a query string), label (the options, readable)}
  constructor(song, { onDelete, onAuthNeeded }) {
    this.song = song;
    this.onDelete = onDelete;
    this.onAuthNeeded = onAuthNeeded;
    this.mixer = null;
    this.stopped = false;
    this.state = el("p", { class: "state", role: "status", "aria-live": "polite" }, "Waiting to upload");
    this.eta = el("p", { class: "eta", hidden: true });
    this.progress = el("progress", { max: "100", "aria-label": `Progress of ${song.name}` });
    this.deleteButton = el("button", { type: "button", class: "delete", "aria-label": `Delete ${song.name}` }, "Delete");
    this.deleteButton.addEventListener("click", () => this.delete());
    this.root = el(
      "li", { class: "song", "data-state": "waiting" },
      el("div", { class: "song-head" },
        el("h3", { class: "song-name" }, song.name),
        el("span", { class: "song-options" }, song.label),
        this.deleteButton),
      this.state,
      this.eta,
      this.progress,
    );
  }

  showEta(status) {
    const seconds = status.eta_seconds;
    this.eta.hidden = typeof seconds !== "number";
    this.eta.textContent = this.eta.hidden ? "" : `About ${formatDuration(seconds)} left`;
  }

  show(state, text, percent = null) {
    this.root.dataset.state = state;
    this.state.textContent = text;
    if (percent === null) this.progress.removeAttribute("value");
    else this.progress.value = percent;
    this.progress.hidden = state !== "uploading" && state !== "processing"; // only these move
  }

  async upload(file) {
    this.show("uploading", "Uploading: 0%", 0);
    try {
      const answer = await api.upload(file, this.song.query, (percent) => {
        this.show("uploading", `Uploading: ${Math.round(percent)}%`, percent);
      });
      this.song.hash = answer.hash;
      if (answer.options) this.song.query = queryOf(answer.options);
      this.root.dataset.hash = answer.hash;
      this.show("submitted", answer.reason);
      return true;
    } catch (error) {
      this.fail(error, "The upload was refused");
      return false;
    }
  }

  async follow() {
    this.root.dataset.hash = this.song.hash;
    while (!this.stopped) {
      let status;
      try {
        status = await api.status(this.song.hash, this.song.query);
      } catch (error) {
        if (error.status === 404) {
          this.show("failed", "The server no longer knows this song (it was removed or expired).");
          return;
        }
        this.fail(error, "Could not get the song's state");
        await sleep(RETRY_MS);
        continue;
      }
      this.render(status);
      if (status.state === "done" || status.state === "failed") return;
      await sleep(POLL_MS);
    }
  }

  render(status) {
    this.showEta(status);
    if (status.state === "queued") {
      const place = status.position ? `position ${status.position} in the queue` : "being handed to a worker";
      const retry = status.reason ? ` (${status.reason})` : "";
      this.show("queued", `Queued: ${place}${retry}`);
    } else if (status.state === "processing") {
      const percent = Math.round(status.progress || 0);
      this.show("processing", `Separating: ${percent}%`, percent);
      if (status.ready_seconds > 0 && status.tracks) this.openMixer(status.tracks, status.ready_seconds);
    } else if (status.state === "failed") {
      this.show("failed", `Failed: ${status.reason || "no reason given"}`);
    } else if (status.state === "done") {
      this.show("done", "Done");
      this.openMixer(status.tracks, null);
    }
  }

  // The stems as far as they are ready (readySeconds), or whole (null): the mixer opens on the first part and is
  // extended, playing on, when the part grows by EXTEND_SECONDS or the whole is done. The mix tools (waveforms,
  // export) come with the whole: they read the done song's waveforms and mix its whole tracks.
  openMixer(tracks, readySeconds) {
    if (!this.mixer) {
      this.mixer = new Mixer(this.song.name, tracks, readySeconds);
      this.root.append(this.mixer.root);
      if (readySeconds === null) this.attachTools();
      this.mixer.load().catch(() => {});
    } else if (this.mixer.partial && (readySeconds === null || readySeconds >= this.mixer.readySeconds + EXTEND_SECONDS)) {
      this.extendTo(readySeconds);
    }
  }

  // A whole asked for while a part is still loading is loaded once that part is (the status is no longer polled).
  extendTo(readySeconds) {
    if (readySeconds === null) this.wholeWanted = true;
    if (this.mixer.extending) return;
    this.mixer.extend(this.wholeWanted ? null : readySeconds).then(() => {
      if (!this.mixer.partial) this.attachTools();
      else if (this.wholeWanted) this.extendTo(null);
    }).catch(() => {});
  }

  attachTools() {
    if (this.tools) return;
    this.tools = attachMixTools(this.mixer, this.song);
  }

  fail(error, what) {
    if (error.status === 401) this.onAuthNeeded();
    this.show("error", `${what}: ${error.message}`);
  }

  async delete() {
    this.deleteButton.disabled = true;
    if (this.song.hash) {
      try {
        await api.removeSong(this.song.hash);
      } catch (error) {
        if (error.status !== 404) {
          this.deleteButton.disabled = false;
          this.fail(error, "Could not delete the song");
          return;
        }
      }
    }
    this.stop();
    this.onDelete(this);
  }

  stop() {
    this.stopped = true;
    this.mixer?.destroy();
    this.root.remove();
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
