// faka pages: only improvements. The order page follows its status and
// shows the keys when they are delivered; copy buttons; the key upload form
// reads a chosen file into its text box. Everything works without this.
"use strict";
(function () {
  function copyButtons(root) {
    root.querySelectorAll("[data-copy-key]").forEach(function (b) {
      if (b.dataset.bound) return;
      b.dataset.bound = "1";
      b.addEventListener("click", function () {
        var code = b.parentNode.querySelector("[data-key]");
        if (!code || !navigator.clipboard) return;
        navigator.clipboard.writeText(code.textContent).then(function () {
          var page = document.querySelector("[data-order-no]");
          b.textContent = page ? page.dataset.copied : "OK";
        });
      });
    });
  }

  function showKeys(page, keys) {
    var box = page.querySelector("[data-keys]");
    var list = box.querySelector("ul");
    list.textContent = "";
    keys.forEach(function (k) {
      var li = document.createElement("li");
      var code = document.createElement("code");
      code.setAttribute("data-key", "");
      code.textContent = k;
      var b = document.createElement("button");
      b.type = "button";
      b.setAttribute("data-copy-key", "");
      b.textContent = page.dataset.copy;
      li.appendChild(code);
      li.appendChild(b);
      list.appendChild(li);
    });
    box.hidden = false;
    page.querySelector("[data-status-label]").textContent = page.dataset.delivered;
    page.querySelectorAll("[data-help], .pay, .manual, [data-pending-only], [data-pending-only] + dd")
      .forEach(function (e) { e.hidden = true; });
    var ins = page.querySelector("[data-instructions]");
    if (ins) ins.hidden = false;
    copyButtons(page);
  }

  var FINAL = { delivered: 1, refunded: 1 };

  function follow(page) {
    var url = "/api/v1/orders/" + encodeURIComponent(page.dataset.orderNo) +
      "?token=" + encodeURIComponent(page.dataset.token);
    var status = page.querySelector("[data-order-status]");
    var delay = 2000;
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (o) {
          if (o && o.status !== status.textContent) {
            if (o.status === "delivered" && o.keys) {
              showKeys(page, o.keys);
              status.textContent = o.status;
            } else {
              // Texts that depend on the status come from the server.
              window.location.reload();
              return;
            }
          }
          if (!o || !FINAL[o.status]) {
            delay = Math.min(delay * 1.3, 15000);
            setTimeout(poll, delay);
          }
        })
        .catch(function () { setTimeout(poll, 15000); });
    }
    if (!FINAL[status.textContent]) setTimeout(poll, delay);
  }

  function upload(form) {
    var file = form.querySelector("[data-key-file]");
    var text = form.querySelector("textarea");
    var bar = form.querySelector("[data-progress]");
    file.addEventListener("change", function () {
      var f = file.files[0];
      if (!f) return;
      var reader = new FileReader();
      bar.hidden = false;
      reader.onprogress = function (e) {
        if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
      };
      reader.onload = function () { text.value = reader.result; bar.value = 100; };
      reader.readAsText(f);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    copyButtons(document);
    var page = document.querySelector("[data-order-no]");
    if (page) follow(page);
    var up = document.querySelector("[data-key-upload]");
    if (up) upload(up);
  });
})();
