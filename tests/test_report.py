from wsss.stages.summary import summary_table
from wsss.viz.report import Section, render, write_report


def test_report_escapes_text_and_links_figures(tmp_path):
    section = Section("CAMs <b>", note="a & b", tables=[(["class", "IoU"], [["cat<script>", "50.0"]])],
                      figures=[("cams/x.png", "x 'quoted'")])
    page = render("t", [section])
    assert "<b>" not in page.split("<h2>")[1].split("</h2>")[0]
    assert "cat&lt;script&gt;" in page and "a &amp; b" in page
    assert "src='cams/x.png'" in page
    assert "http" not in page  # no external assets
    index = write_report(tmp_path / "report", "t", [section])
    assert index.read_text() == page


def test_summary_table_shows_missing_values_as_dashes():
    text = summary_table({"seed_cam_miou": 41.234, "pseudo_miou": None, "wsss_over_full": 0.8})
    lines = text.splitlines()
    assert any("seed CAM" in line and "41.23" in line for line in lines)
    assert any(line.startswith("pseudo masks ") and line.rstrip().endswith("-") for line in lines)
    assert any("WSSS / fully supervised" in line and "0.800" in line for line in lines)
