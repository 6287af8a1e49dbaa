// The printable QR sheet: a print button (inline handlers are forbidden by the CSP).
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("print-qr");
  if (button) button.addEventListener("click", () => window.print());
});
