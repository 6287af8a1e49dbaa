// My bookings, waitlist and sample requests: small progressive enhancements. Every page works
// without this script; the server guards double submissions with a one-time form key.
(function () {
  "use strict";

  // A second click while the first submission is on its way sends nothing more.
  document.querySelectorAll("form.once").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent === "1") {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "1";
      form.setAttribute("aria-busy", "true");
    });
  });

  // Copy the calendar link.
  document.querySelectorAll("button.copy[data-copy-target]").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.dataset.copyTarget);
      if (!input) {
        return;
      }
      var done = function () {
        button.textContent = button.dataset.copiedText || button.textContent;
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () {
          input.select();
        });
      } else {
        input.select();
        done();
      }
    });
  });

  // Refuse a file that is too large before uploading it.
  document.querySelectorAll("input[type=file][data-max-bytes]").forEach(function (input) {
    var max = parseInt(input.dataset.maxBytes, 10);
    var error = document.getElementById(input.id + "-error");
    var check = function () {
      var file = input.files && input.files[0];
      var tooLarge = Boolean(file && max && file.size > max);
      if (error) {
        error.textContent = tooLarge ? input.dataset.tooLarge : "";
        error.hidden = !tooLarge;
      }
      input.setAttribute("aria-invalid", tooLarge ? "true" : "false");
      return !tooLarge;
    };
    input.addEventListener("change", check);
    if (input.form) {
      input.form.addEventListener("submit", function (event) {
        if (!check()) {
          event.preventDefault();
          event.stopImmediatePropagation();
          input.form.dataset.sent = "";
          input.focus();
        }
      }, true);
    }
  });
})();
