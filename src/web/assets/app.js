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

  // The key file form posts itself without JavaScript; with it, the same
  // multipart body goes through XHR so the bar can show the upload.
  function upload(form) {
    var bar = form.querySelector("[data-progress]");
    var problem = form.querySelector("[data-upload-error]");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      bar.hidden = false;
      bar.value = 0;
      problem.hidden = true;
      xhr.upload.onprogress = function (p) {
        if (p.lengthComputable) bar.value = Math.round((p.loaded / p.total) * 100);
      };
      xhr.onload = function () {
        if (xhr.status === 200) {
          window.location.assign(xhr.responseURL || window.location.href);
          return;
        }
        var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var msg = page.querySelector(".error, h1");
        problem.textContent = msg ? msg.textContent : String(xhr.status);
        problem.hidden = false;
      };
      xhr.onerror = function () {
        problem.textContent = "network error";
        problem.hidden = false;
      };
      xhr.send(new FormData(form));
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
