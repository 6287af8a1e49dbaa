// Lab manager pages: another empty interval row for a weekday of the opening hours form.
// Without script the form still works: every day shows one empty row to fill and save.
(function () {
  "use strict";

  function addSpan(button) {
    var fieldset = button.closest("fieldset");
    var rows = fieldset.querySelectorAll(".span-row");
    var last = rows[rows.length - 1];
    var copy = last.cloneNode(true);
    copy.querySelectorAll("input").forEach(function (input) {
      input.value = "";
      input.removeAttribute("aria-invalid");
    });
    last.parentNode.appendChild(copy);
    copy.querySelector("input").focus();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-add-span]");
    if (button) {
      event.preventDefault();
      addSpan(button);
    }
  });
})();
