"""Fixtures for the server tests: real `slidesam serve` processes on loopback and the real data they segment."""
import pytest

from server_testing import API_KEY, MR, MR_SEG, ServerProcess


@pytest.fixture(scope="session")
def main_server(tmp_path_factory):
    """Key required, 1 MiB upload limit (the 20-slice MR scan is 0.43 MB)."""
    server = ServerProcess(tmp_path_factory.mktemp("server"), "--max-upload-mb", "1", api_key=API_KEY)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def local_model():
    """The same model in this process, to compare the server's answers with the local engine's."""
    from SlideSAMLib import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def mr():
    """(image, volume (k, j, i), labels) of the real MR abdomen scan."""
    from SlideSAMLib import array_of, read_image

    image = read_image(MR)
    return image, array_of(image), array_of(read_image(MR_SEG))
