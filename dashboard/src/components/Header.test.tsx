import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { SessionProvider } from "../session";
import { memoryApi } from "../testing";
import { Header } from "./Header";

function renderHeader() {
  return render(<SessionProvider api={memoryApi({})}><Header route={{ page: "home" }} /></SessionProvider>);
}

describe("the header", () => {
  beforeEach(() => {
    localStorage.clear();
    window.location.hash = "";
  });

  it("opens the user's page on Show and keeps the key for next time, not on every keystroke", async () => {
    const user = userEvent.setup();
    renderHeader();
    await user.type(screen.getByLabelText("API key"), "s3cret");
    expect(localStorage.getItem("shoprec.apiKey")).toBeNull();
    await user.type(screen.getByLabelText("User ID"), "  U42 {Enter}");
    expect(window.location.hash).toBe("#/users/U42");
    expect(localStorage.getItem("shoprec.apiKey")).toBe("s3cret");
  });

  it("starts with the remembered key", () => {
    localStorage.setItem("shoprec.apiKey", "remembered");
    renderHeader();
    expect(screen.getByLabelText("API key")).toHaveValue("remembered");
  });

  it("shows how fresh the published lists are", async () => {
    renderHeader();
    expect(await screen.findByTestId("freshness")).toHaveTextContent(/^Computed .+, run run-1$/);
  });
});
