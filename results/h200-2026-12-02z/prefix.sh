python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .peers/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:.peers/src:.peers/stubs
