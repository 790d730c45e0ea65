; LoRA Studio for Windows: the installer (NSIS 3, made on Linux by installer/windows/build.sh).
;
;   makensis -NOCD -DVERSION=0.1.0 -DDIST=<bundle folder> -DREPO=<checkout> -DOUTFILE=<setup.exe> lora-studio.nsi
;
; What it does, and why (docs/installer.md, "Windows installer"):
; - installs for the current user only, into %LOCALAPPDATA%\Programs\LoRA Studio: no administrator
;   rights, no UAC prompt, and "Start LoRA Studio" at the end runs as the user, not elevated;
; - everything it needs is inside it: the programs, Qt, and the Python that the app later makes the
;   ML runtime from (the runtime itself is downloaded from inside the app, with progress and a log);
; - only NSIS's own instructions: no script of any kind is written or run, nothing is downloaded;
; - a Start-menu entry, "Open with LoRA Studio" for .jsonl, .parquet and .csv (the default program
;   only for .jsonl and .parquet, and only when nothing else has them; .csv keeps its program),
;   an entry in Settings > Apps with the version, publisher, icon and size;
; - the uninstaller removes the program and keeps the user's runs, models and ML runtime unless
;   the user ticks them (or passes /REMOVEDATA to a silent uninstall: /S /REMOVEDATA).

; A 64-bit installer for a 64-bit app: it installs and registers without WOW64 redirection, and
; the 32-bit stub would not even start on a 64-bit-only Wine.
Target amd64-unicode
ManifestDPIAware true
!ifndef VERSION
  !error "pass -DVERSION=x.y.z (installer/windows/build.sh takes it from pyproject.toml)"
!endif
!ifndef DIST
  !error "pass -DDIST=<the PyInstaller folder with python\ added> (installer/windows/build.sh does)"
!endif
!ifndef REPO
  !define REPO "../.."
!endif
!ifndef OUTFILE
  !define OUTFILE "LoRA-Studio-${VERSION}-Setup.exe"
!endif

!define APP "LoRA Studio"
!define EXE "lora-studio.exe"
!define CLI "lora-studio-cli.exe"
!define PUBLISHER "LoRA Studio developers"
!define UNINSTALLER "Uninstall LoRA Studio.exe"
!define UNINST_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\LoRAStudio"
!define APP_KEY "Software\LoRA Studio"
!define PROGID "LoRAStudio.Dataset"
; The app's data folder: platformdirs' user_data_dir("lora-studio", appauthor=False) on Windows
; (studio/paths.py); runs, converted models, the ML runtime and logs live there.
!define DATA_DIR "$LOCALAPPDATA\lora-studio"

Name "${APP}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${APP}"
InstallDirRegKey HKCU "${UNINST_KEY}" "InstallLocation"   ; an update goes where the last install went
RequestExecutionLevel user
SetCompressor /SOLID lzma
SetCompressorDictSize 64
BrandingText "${APP} ${VERSION}"
ShowInstDetails hide
ShowUninstDetails hide

VIProductVersion "${VERSION}.0"
VIFileVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "${APP}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "CompanyName" "${PUBLISHER}"
VIAddVersionKey "FileDescription" "${APP} ${VERSION} Setup"
VIAddVersionKey "LegalCopyright" "Apache License 2.0"

!ifdef SIGN_CMD   ; build.sh with SIGN_PFX: the uninstaller is signed before it is packed
  !uninstfinalize '${SIGN_CMD} "%1"' = 0
!endif

!include MUI2.nsh
!include LogicLib.nsh
!include FileFunc.nsh
!include Sections.nsh
!include WinVer.nsh

!define MUI_ICON "${REPO}/installer/lora-studio.ico"
!define MUI_UNICON "${REPO}/installer/lora-studio.ico"
!define MUI_ABORTWARNING
!define MUI_WELCOMEPAGE_TEXT "This installs ${APP} ${VERSION} for you only: no administrator rights are needed.$\r$\n$\r$\n\
  The first time you train, ${APP} offers to set up its ML runtime (PyTorch and the training libraries): \
  it downloads about 3 GB, or more for an NVIDIA GPU, and shows its progress. Nothing else is downloaded.$\r$\n$\r$\n\
  Your runs and models are kept in $LOCALAPPDATA\lora-studio, also when you uninstall or update."
!define MUI_DIRECTORYPAGE_TEXT_TOP "${APP} is installed for your account only. To install it somewhere else, choose another folder."
!define MUI_FINISHPAGE_RUN "$INSTDIR\${EXE}"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP}"
!define MUI_UNCOMPONENTSPAGE_TEXT_TOP "${APP} is removed. Tick what else to delete; by default your work is kept."

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_COMPONENTS
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

; A running copy holds its files: say so and wait, rather than fail half-way through an update or
; leave half a folder behind. The programs are checked, and every DLL and extension module at the top
; of _internal: a training run or runtime setup started from the app (under the runtime's Python, with
; the app's folder on its PYTHONPATH) loads some of them, and goes on after the window is closed.
!macro ENSURE_CLOSED un
Function ${un}EnsureClosed
  ${ForEach} $1 0 1 + 1
    ${If} $1 == 0
      StrCpy $2 "$INSTDIR\${EXE}"
    ${Else}
      StrCpy $2 "$INSTDIR\${CLI}"
    ${EndIf}
    Push $2
    Call ${un}WaitUntilFree
  ${Next}
  ${ForEach} $1 0 1 + 1
    ${If} $1 == 0
      StrCpy $5 "*.dll"
    ${Else}
      StrCpy $5 "*.pyd"
    ${EndIf}
    FindFirst $3 $4 "$INSTDIR\_internal\$5"
    ${DoWhile} $4 != ""
      Push "$INSTDIR\_internal\$4"
      Call ${un}WaitUntilFree
      FindNext $3 $4
    ${Loop}
    FindClose $3
  ${Next}
FunctionEnd

Function ${un}WaitUntilFree   ; the path on the stack: in use (opened for writing fails) -> ask, retry or stop
  Exch $2
  ${If} ${FileExists} $2
    retry:
    ClearErrors
    FileOpen $0 $2 a
    ${If} ${Errors}
      MessageBox MB_RETRYCANCEL|MB_ICONEXCLAMATION "${APP} is still running, or a training run or setup it started has not \
        finished ($2 is in use).$\r$\nClose the window and stop or wait for the run, then click Retry." /SD IDCANCEL IDRETRY retry
      Abort "${APP} is running: close it and run this again."
    ${EndIf}
    FileClose $0
  ${EndIf}
  Pop $2
FunctionEnd
!macroend
!insertmacro ENSURE_CLOSED ""
!insertmacro ENSURE_CLOSED "un."

Section "-${APP}" SecApp
  Call EnsureClosed
  SetOutPath "$INSTDIR"
  ; An update replaces the previous version's folders whole, so no library of an older build is
  ; left to be loaded by the new one. Only the installer's own folders, never $INSTDIR itself.
  RMDir /r "$INSTDIR\_internal"
  RMDir /r "$INSTDIR\python"
  File "${DIST}/${EXE}"
  File "${DIST}/${CLI}"
  File /r "${DIST}/_internal"
  File /r "${DIST}/python"
  WriteUninstaller "$INSTDIR\${UNINSTALLER}"

  CreateShortcut "$SMPROGRAMS\${APP}.lnk" "$INSTDIR\${EXE}" "" "$INSTDIR\${EXE}" 0 SW_SHOWNORMAL "" \
    "Fine-tune an open LLM on your own computer"

  WriteRegStr HKCU "${UNINST_KEY}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINST_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayIcon" "$INSTDIR\${EXE},0"
  WriteRegStr HKCU "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINST_KEY}" "UninstallString" '"$INSTDIR\${UNINSTALLER}"'
  WriteRegStr HKCU "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\${UNINSTALLER}" /S'
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  WriteRegDWORD HKCU "${UNINST_KEY}" "EstimatedSize" $0   ; KB, as Settings > Apps expects
SectionEnd

; .jsonl and .parquet become LoRA Studio's only where no program has them; .csv only gets the
; "Open with" entry (a spreadsheet keeps it). Windows 10/11 keep the user's own choice above all this.
!macro OPEN_WITH EXT CLAIM
  WriteRegStr HKCU "Software\Classes\${EXT}\OpenWithProgids" "${PROGID}" ""
  WriteRegStr HKCU "Software\Classes\Applications\${EXE}\SupportedTypes" "${EXT}" ""
  WriteRegStr HKCU "${APP_KEY}\Capabilities\FileAssociations" "${EXT}" "${PROGID}"
  !if ${CLAIM} == 1
    ReadRegStr $0 HKCR "${EXT}" ""
    ${If} $0 == ""
      WriteRegStr HKCU "Software\Classes\${EXT}" "" "${PROGID}"
    ${EndIf}
  !endif
!macroend

Section "Open datasets with ${APP} (.jsonl, .parquet, .csv)" SecAssoc
  WriteRegStr HKCU "Software\Classes\${PROGID}" "" "Dataset (${APP})"
  WriteRegStr HKCU "Software\Classes\${PROGID}\DefaultIcon" "" "$INSTDIR\${EXE},0"
  WriteRegStr HKCU "Software\Classes\${PROGID}\shell\open" "" "Open with ${APP}"
  WriteRegStr HKCU "Software\Classes\${PROGID}\shell\open\command" "" '"$INSTDIR\${EXE}" --gui "%1"'
  WriteRegStr HKCU "Software\Classes\Applications\${EXE}" "FriendlyAppName" "${APP}"
  WriteRegStr HKCU "Software\Classes\Applications\${EXE}\DefaultIcon" "" "$INSTDIR\${EXE},0"
  WriteRegStr HKCU "Software\Classes\Applications\${EXE}\shell\open\command" "" '"$INSTDIR\${EXE}" --gui "%1"'
  WriteRegStr HKCU "${APP_KEY}\Capabilities" "ApplicationName" "${APP}"
  WriteRegStr HKCU "${APP_KEY}\Capabilities" "ApplicationDescription" "Fine-tune an open LLM on your own computer"
  WriteRegStr HKCU "Software\RegisteredApplications" "${APP}" "${APP_KEY}\Capabilities"
  !insertmacro OPEN_WITH ".jsonl" 1
  !insertmacro OPEN_WITH ".parquet" 1
  !insertmacro OPEN_WITH ".csv" 0
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'   ; SHCNE_ASSOCCHANGED: Explorer rereads
SectionEnd

Section /o "Desktop shortcut" SecDesktop
  CreateShortcut "$DESKTOP\${APP}.lnk" "$INSTDIR\${EXE}" "" "$INSTDIR\${EXE}" 0
SectionEnd

!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecAssoc} "Adds ${APP} to Open with for .jsonl, .parquet and .csv files. Your program for .csv stays the default."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecDesktop} "A shortcut on the desktop (the Start menu entry is always made)."
!insertmacro MUI_FUNCTION_DESCRIPTION_END

Function .onInit
  ${IfNot} ${AtLeastWin10}
    MessageBox MB_OK|MB_ICONSTOP "${APP} needs 64-bit Windows 10 or 11." /SD IDOK
    Abort
  ${EndIf}
FunctionEnd

; ---------------------------------------------------------------------------------------------
; Uninstaller: exactly what the installer put there; the install folder itself only when that
; leaves it empty (a folder the user chose may hold other files).

!macro UN_OPEN_WITH EXT
  DeleteRegValue HKCU "Software\Classes\${EXT}\OpenWithProgids" "${PROGID}"
  DeleteRegKey /ifempty HKCU "Software\Classes\${EXT}\OpenWithProgids"
  ReadRegStr $0 HKCU "Software\Classes\${EXT}" ""
  ${If} $0 == "${PROGID}"
    DeleteRegValue HKCU "Software\Classes\${EXT}" ""
  ${EndIf}
  DeleteRegKey /ifempty HKCU "Software\Classes\${EXT}"
!macroend

Section "-un.${APP}" SecUnApp
  Call un.EnsureClosed
  Delete "$INSTDIR\${EXE}"
  Delete "$INSTDIR\${CLI}"
  RMDir /r "$INSTDIR\_internal"
  RMDir /r "$INSTDIR\python"
  Delete "$INSTDIR\${UNINSTALLER}"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\${APP}.lnk"
  Delete "$DESKTOP\${APP}.lnk"
  DeleteRegKey HKCU "${UNINST_KEY}"

  DeleteRegKey HKCU "Software\Classes\${PROGID}"
  DeleteRegKey HKCU "Software\Classes\Applications\${EXE}"
  DeleteRegKey HKCU "${APP_KEY}"
  DeleteRegValue HKCU "Software\RegisteredApplications" "${APP}"
  !insertmacro UN_OPEN_WITH ".jsonl"
  !insertmacro UN_OPEN_WITH ".parquet"
  !insertmacro UN_OPEN_WITH ".csv"
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'
SectionEnd


Section /o "un.The ML runtime (PyTorch and the training libraries; the app can download it again)" SecUnRuntime
  RMDir /r "${DATA_DIR}\runtime"
  Delete "${DATA_DIR}\runtime.setup-lock"
SectionEnd

Section /o "un.Your runs, converted models, logs and the ML runtime" SecUnData
  RMDir /r "${DATA_DIR}"
  ReadEnvStr $0 LORA_STUDIO_HOME
  ${If} $0 != ""
    DetailPrint "LORA_STUDIO_HOME is set: $0 is your folder and is left as it is."
  ${EndIf}
SectionEnd

!insertmacro MUI_UNFUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecUnRuntime} "Deletes ${DATA_DIR}\runtime (several GB). Your runs are kept."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecUnData} "Deletes ${DATA_DIR}: every run, adapter, export and converted model in it. This cannot be undone."
!insertmacro MUI_UNFUNCTION_DESCRIPTION_END

Function un.onInit
  ${GetParameters} $R0
  ClearErrors
  ${GetOptions} $R0 "/REMOVEDATA" $R1
  ${IfNot} ${Errors}
    !insertmacro SelectSection ${SecUnData}
  ${EndIf}
FunctionEnd
