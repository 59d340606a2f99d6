// grimace station: refresh the live previews and chamber status (part of grimace-edge,
// AGPL-3.0-or-later; no third-party code). Pages work without it; it only keeps them current.
"use strict";
(function () {
  function refreshPreviews() {
    document.querySelectorAll("img.preview[data-src]").forEach(function (img) {
      var probe = new Image();
      probe.onload = function () { img.src = probe.src; };
      probe.src = img.dataset.src + "?t=" + Date.now();
    });
  }
  function refreshStatus() {
    var boxes = document.querySelectorAll(".live-status[data-src]");
    if (!boxes.length) { return; }
    fetch(boxes[0].dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        boxes.forEach(function (box) {
          var dl = doc.querySelector('dl[data-chamber="' + CSS.escape(box.dataset.chamber) + '"]');
          if (dl) { box.replaceChildren(document.importNode(dl, true)); }
        });
      })
      .catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("img.preview, .live-status")) {
      refreshPreviews();
      setInterval(refreshPreviews, 1000);
      setInterval(refreshStatus, 1000);
    }
  });
})();
