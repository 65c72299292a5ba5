// @ts-check
// redrive console: progressive enhancement only. Every page works without this file; with it:
//  - live progress: an element with data-poll="<API status URL>" is refreshed from the API
//    (the session cookie authenticates a GET; no CSRF token is needed for reads) every second;
//    when the command's or its job's state changes (a replay starts running, is cancelled, is
//    done) the page reloads, so the server renders what that state allows (the cancel button,
//    the result);
//  - select-all: a checkbox with data-select-all toggles every `input[name=id]` of its form;
//  - keyboard: "/" focuses the filter, j/k move through a table's rows, Enter opens the current
//    row's first link, x toggles its checkbox, "g d" goes to the dead letters, "g o" overview.
// Checked by `tsc --noEmit` (tests/browser/tsconfig.json): strict, no implicit any.

(() => {
  "use strict";

  /** How often a command's status is fetched, ms. */
  const POLL_MS = 1000;

  /**
   * The fields of GET /api/v1/commands/{id} this script reads.
   * @typedef {{ state?: string, progress?: { state?: string, selected?: number,
   *   replayed?: number, skipped?: number, refused?: number, invalid?: number } | null }} Status
   */

  /**
   * Sets the text of every `[data-field=name]` inside `root`.
   * @param {Element} root
   * @param {string} name
   * @param {string} value
   */
  function setField(root, name, value) {
    root.querySelectorAll(`[data-field="${name}"]`).forEach((el) => {
      el.textContent = value;
    });
  }

  /**
   * Polls one command's status and shows it in `el` until it is done.
   * @param {HTMLElement} el
   */
  function poll(el) {
    const url = el.dataset.poll;
    if (!url) return;
    const rendered = { state: el.dataset.state ?? "", job: el.dataset.jobState ?? "" };
    const tick = async () => {
      /** @type {Response} */
      let resp;
      try {
        resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      } catch {
        window.setTimeout(tick, POLL_MS * 3);
        return;
      }
      if (resp.status === 401) {
        // The session ended: the reload lands on the login page.
        window.location.reload();
        return;
      }
      if (!resp.ok) {
        window.setTimeout(tick, POLL_MS * 3);
        return;
      }
      /** @type {Status} */
      const s = await resp.json();
      const p = s.progress;
      if (p) {
        const selected = p.selected ?? 0;
        const handled = (p.replayed ?? 0) + (p.skipped ?? 0) + (p.refused ?? 0) + (p.invalid ?? 0);
        setField(el, "replayed", String(p.replayed ?? 0));
        setField(el, "skipped", String(p.skipped ?? 0));
        setField(el, "refused", String(p.refused ?? 0));
        setField(el, "invalid", String(p.invalid ?? 0));
        setField(el, "selected", String(selected));
        setField(el, "job-state", p.state ?? "");
        const bar = el.querySelector("progress");
        if (bar instanceof HTMLProgressElement && selected > 0) {
          bar.max = selected;
          bar.value = Math.min(handled, selected);
        }
      }
      const state = s.state ?? "";
      setField(el, "state", state);
      el.dataset.live = "on";
      if (state !== rendered.state || (p?.state ?? "") !== rendered.job) {
        window.location.reload();
        return;
      }
      window.setTimeout(tick, POLL_MS);
    };
    window.setTimeout(tick, POLL_MS);
  }

  /**
   * Wires a select-all checkbox to the id checkboxes of its form, and keeps the count shown.
   * @param {HTMLInputElement} all
   */
  function selectAll(all) {
    const form = all.form;
    if (!form) return;
    const boxes = () => Array.from(form.querySelectorAll('input[type="checkbox"][name="id"]')).filter(
      /** @returns {b is HTMLInputElement} */ (b) => b instanceof HTMLInputElement,
    );
    const show = () => {
      const n = boxes().filter((b) => b.checked).length;
      form.querySelectorAll("[data-selected-count]").forEach((el) => {
        el.textContent = n === 1 ? "1 selected" : `${n} selected`;
      });
      all.checked = n > 0 && n === boxes().length;
      all.indeterminate = n > 0 && n < boxes().length;
    };
    all.addEventListener("change", () => {
      boxes().forEach((b) => {
        b.checked = all.checked;
      });
      show();
    });
    form.addEventListener("change", (e) => {
      if (e.target !== all) show();
    });
    show();
  }

  /**
   * Asks before a form marked data-confirm is sent.
   * @param {HTMLFormElement} form
   */
  function confirmFirst(form) {
    form.addEventListener("submit", (e) => {
      const text = form.dataset.confirm;
      if (text && !window.confirm(text)) e.preventDefault();
    });
  }

  /** The rows j/k move through: the first table marked data-nav. */
  function rows() {
    const table = document.querySelector("table[data-nav]");
    if (!table) return [];
    return Array.from(table.querySelectorAll("tbody tr")).filter(
      /** @returns {r is HTMLTableRowElement} */ (r) => r instanceof HTMLTableRowElement,
    );
  }

  /** @param {number} step */
  function move(step) {
    const all = rows();
    if (all.length === 0) return;
    const at = all.findIndex((r) => r.classList.contains("current"));
    const next = at < 0 ? (step > 0 ? 0 : all.length - 1) : Math.max(0, Math.min(all.length - 1, at + step));
    all.forEach((r) => r.classList.remove("current"));
    const row = all[next];
    if (!row) return;
    row.classList.add("current");
    const link = row.querySelector("a");
    if (link instanceof HTMLElement) link.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }

  /** @param {EventTarget | null} t */
  function typing(t) {
    return t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement ||
      (t instanceof HTMLElement && t.isContentEditable);
  }

  let pendingG = false;

  /** @param {KeyboardEvent} e */
  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const base = document.body.dataset.base ?? "";
    if (pendingG) {
      pendingG = false;
      const to = { d: "/dead-letters", o: "/", b: "/breakers", a: "/audit", t: "/tasks" }[e.key];
      if (to) {
        e.preventDefault();
        window.location.href = base + to;
      }
      return;
    }
    switch (e.key) {
      case "/": {
        const first = document.querySelector("[data-filter] input, [data-filter] select");
        if (first instanceof HTMLElement) {
          e.preventDefault();
          first.focus();
        }
        break;
      }
      case "j":
        e.preventDefault();
        move(1);
        break;
      case "k":
        e.preventDefault();
        move(-1);
        break;
      case "x": {
        const row = rows().find((r) => r.classList.contains("current"));
        const box = row?.querySelector('input[type="checkbox"]');
        if (box instanceof HTMLInputElement) {
          e.preventDefault();
          box.click();
        }
        break;
      }
      case "g":
        pendingG = true;
        window.setTimeout(() => {
          pendingG = false;
        }, 1500);
        break;
      default:
    }
  }

  function start() {
    document.querySelectorAll("[data-poll]").forEach((el) => {
      if (el instanceof HTMLElement) poll(el);
    });
    document.querySelectorAll("input[data-select-all]").forEach((el) => {
      if (el instanceof HTMLInputElement) selectAll(el);
    });
    document.querySelectorAll("form[data-confirm]").forEach((el) => {
      if (el instanceof HTMLFormElement) confirmFirst(el);
    });
    document.addEventListener("keydown", onKey);
    document.documentElement.dataset.js = "on";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
