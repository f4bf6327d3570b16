@echo off
rem Microsoft.ML.Gohsp build entry point for Windows: build.cmd {test|pack|sample|bench|build} [-- args]
rem (the package check of ./build.sh test, test/consumer, runs from build.sh)
rem Windows needs no native compatibility step (TorchSharp's win-x64 natives load as shipped).
setlocal
set VERB=%1
if "%VERB%"=="" set VERB=test
shift
if "%1"=="--" shift
if "%CONFIGURATION%"=="" set CONFIGURATION=Release
if "%TORCH_BACKEND%"=="" set TORCH_BACKEND=cpu
set ARGS=
:collect
if "%1"=="" goto run
set ARGS=%ARGS% %1
shift
goto collect
:run
if "%VERB%"=="pack" dotnet pack src\Microsoft.ML.Gohsp\Microsoft.ML.Gohsp.csproj -c %CONFIGURATION% -o artifacts\packages -nologo %ARGS% & exit /b %ERRORLEVEL%
dotnet build Microsoft.ML.Gohsp.sln -c %CONFIGURATION% -p:TorchBackend=%TORCH_BACKEND% -nologo || exit /b 1
if "%VERB%"=="build" exit /b 0
if "%VERB%"=="test" dotnet test test\Microsoft.ML.Gohsp.Tests\Microsoft.ML.Gohsp.Tests.csproj -c %CONFIGURATION% --no-build --logger "console;verbosity=normal" %ARGS% & exit /b %ERRORLEVEL%
if "%VERB%"=="sample" dotnet samples\Cifar10Pruning\bin\%CONFIGURATION%\net10.0\Cifar10Pruning.dll %ARGS% & exit /b %ERRORLEVEL%
if "%VERB%"=="bench" dotnet benchmarks\Microsoft.ML.Gohsp.Benchmarks\bin\%CONFIGURATION%\net10.0\Microsoft.ML.Gohsp.Benchmarks.dll %ARGS% & exit /b %ERRORLEVEL%
echo usage: build.cmd {test^|pack^|sample^|bench^|build} [-- args]
exit /b 2
